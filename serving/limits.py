"""A deadline for the request body, so a client that stalls mid-body cannot hold a request open.

uvicorn bounds an idle connection between requests (`timeout_keep_alive`) but not a request
whose headers arrived and whose body never completes: the endpoint would wait on it forever,
holding its connection and memory. This middleware gives the whole body `timeout_s` from the
start of the request; past it, reading the body raises `BodyTimeout` (408, `Connection: close`).
A body that has arrived costs one `asyncio.timeout_at` per read, microseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from churnops.serving.errors import BodyTimeout

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyDeadline:
    """ASGI middleware: the request body must arrive within `timeout_s` of the request's start.

    Args:
        app: The wrapped ASGI application.
        timeout_s: Seconds the whole body may take.
    """

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Serve one connection scope, bounding the body reads of an HTTP request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        complete = False

        async def bounded_receive() -> Message:
            nonlocal complete
            if complete:
                # After the body, `receive` only waits for a disconnect: no deadline applies.
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(timeout_s=self.timeout_s) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)

"""`churnops stream`: consume the event stream into the lake, replay it, compact the lake's stream files."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from churnops.commands.common import HomeOption, WaitOption, console, fail, workspace
from churnops.errors import ChurnopsError

if TYPE_CHECKING:
    from churnops.ingestion.broker import BrokerNames
    from churnops.ingestion.stream.consumer import Committed, ConsumerSettings
    from churnops.settings import Workspace

stream_app = typer.Typer(
    help="The event stream (NATS JetStream) → lake → online store: consume, replay, compact.",
    no_args_is_help=True,
)

MaxRowsOption = Annotated[int, typer.Option("--max-rows", min=1, help="Most records in one micro-batch.")]


class StreamError(ChurnopsError):
    """The broker is unreachable or refused (exit 1)."""

    exit_code = 1


def _names(home: Path) -> BrokerNames:
    from churnops.ingestion.broker import BrokerNames

    return BrokerNames.for_home(home)


MaxWaitOption = Annotated[
    float,
    typer.Option("--max-wait", min=0.01, metavar="SECONDS", help="Longest a micro-batch keeps filling."),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus /metrics on this port."),
]
CompactAfterOption = Annotated[
    int,
    typer.Option(
        "--compact-after", min=0, help="Fold a partition once it has this many stream files (0: never)."
    ),
]
AckWaitOption = Annotated[
    float,
    typer.Option(
        "--ack-wait",
        min=1,
        metavar="SECONDS",
        help="Seconds before the broker redelivers an unacknowledged record "
        "(set when the consumer is created).",
    ),
]
UntilIdleOption = Annotated[
    bool,
    typer.Option("--until-idle", help="Stop once every record on the stream is committed and acknowledged."),
]


@stream_app.command("run")
def run_command(
    home: HomeOption = None,
    max_rows: MaxRowsOption = 2_000,
    max_wait: MaxWaitOption = 0.5,
    metrics_port: MetricsPortOption = None,
    online: Annotated[
        bool, typer.Option("--online/--no-online", help="Refresh the touched customers' online features.")
    ] = True,
    compact_after: CompactAfterOption = 64,
    ack_wait: AckWaitOption = 30.0,
    until_idle: UntilIdleOption = False,
    wait: WaitOption = 30.0,
) -> None:
    """Consume the stream into the lake until SIGTERM/SIGINT (the micro-batch in flight is finished)."""
    from churnops.ingestion.broker import BrokerError
    from churnops.ingestion.stream.consumer import ConsumerSettings
    from churnops.streaming import BackgroundRefresh, OnlineRefresh, commit_lock

    ws = workspace(home, create=True)
    lock = commit_lock(ws, command="churnops stream run", wait=wait)
    guard = threading.Lock()
    hook = None
    if online:
        refresh = OnlineRefresh(ws=ws, lock=lock, guard=guard)
        refresh.open()
        hook = BackgroundRefresh(refresh)
    settings = ConsumerSettings(
        max_rows=max_rows,
        max_wait=max_wait,
        compact_after=compact_after,
        ack_wait=ack_wait,
        until_idle=until_idle,
    )
    try:
        asyncio.run(
            _consume(ws, lock=lock, guard=guard, hook=hook, settings=settings, metrics_port=metrics_port)
        )
    except BrokerError as exc:
        raise StreamError(str(exc)) from exc
    finally:
        if hook is not None:
            hook.close()
    console.print("stopped: every acknowledged record is committed", highlight=False)


async def _consume(
    ws: Workspace,
    *,
    lock: Callable[[], AbstractContextManager[object]],
    guard: threading.Lock,
    hook: Callable[[Committed], None] | None,
    settings: ConsumerSettings,
    metrics_port: int | None,
) -> None:
    """Run the consumer until SIGTERM or SIGINT (or until idle, when asked)."""
    from churnops.ingestion.stream.consumer import StreamConsumer
    from churnops.ingestion.stream.metrics import StreamMetrics, serve_metrics
    from churnops.streaming import stream_target

    names = _names(ws.home)
    metrics = StreamMetrics()
    if metrics_port is not None:
        serve_metrics(metrics, port=metrics_port)
    consumer = StreamConsumer(
        names=names,
        target=stream_target(ws, stream=names.stream, guard=guard),
        lock=lock,
        on_commit=hook,
        settings=settings,
        metrics=metrics,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    console.print(
        f"consuming {names.events_filter} (stream {names.stream}, consumer {names.durable}) into {ws.lake}",
        highlight=False,
    )
    await consumer.run(stop)


@stream_app.command("replay")
def replay_command(
    home: HomeOption = None,
    from_sequence: Annotated[
        int | None, typer.Option("--from-sequence", min=1, help="Replay from this stream sequence.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Replay records stored at or after this ISO-8601 time.")
    ] = None,
    max_rows: MaxRowsOption = 2_000,
    online: Annotated[
        bool, typer.Option("--online/--no-online", help="Refresh the touched customers' online features.")
    ] = False,
    wait: WaitOption = 30.0,
) -> None:
    """Rebuild the lake from the broker (an ordered ephemeral consumer; the durable one is untouched)."""
    from churnops.ingestion.broker import BrokerError
    from churnops.ingestion.stream.consumer import ConsumerSettings, replay
    from churnops.streaming import OnlineRefresh, commit_lock, stream_target

    if from_sequence is not None and since is not None:
        raise fail("pass --from-sequence or --since, not both", code=2)
    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError as exc:
            raise fail(
                f"--since {since!r} is not an ISO-8601 time such as 2026-07-24T13:05:00Z", code=2
            ) from exc
    ws = workspace(home, create=True)
    names = _names(ws.home)
    lock = commit_lock(ws, command="churnops stream replay", wait=wait)
    hook = OnlineRefresh(ws=ws, lock=lock) if online else None
    try:
        batches = asyncio.run(
            replay(
                names=names,
                target=stream_target(ws, stream=names.stream),
                from_sequence=from_sequence,
                since=start,
                settings=ConsumerSettings(max_rows=max_rows),
                on_commit=hook,
                lock=lock,
            )
        )
    except BrokerError as exc:
        raise StreamError(str(exc)) from exc
    totals = {k: sum(getattr(a, k) for b in batches for a in b.appended) for k in
              ("received", "accepted", "quarantined", "duplicates")}  # fmt: skip
    console.print(
        f"replayed {len(batches)} micro-batch(es): {totals['received']:,} received, {totals['accepted']:,} "
        f"accepted, {totals['quarantined']:,} quarantined, {totals['duplicates']:,} duplicates",
        highlight=False,
    )


@stream_app.command("compact")
def compact_command(
    ctx: typer.Context,
    home: HomeOption = None,
    wait: WaitOption = 0.0,
) -> None:
    """Fold every partition's stream files into its data.parquet (atomic per partition, idempotent)."""
    from churnops.commands.common import writer_lock
    from churnops.contracts.source_contract import load_source_contracts
    from churnops.ingestion.recovery import recover
    from churnops.ingestion.stream.append import compact_source

    ws = workspace(home)
    writer_lock(ctx, ws, wait=wait)
    recover(lake_dir=ws.lake, quarantine_dir=ws.quarantine, log_db=ws.ingestion_log)
    for contract in load_source_contracts().values():
        done = compact_source(contract, lake_dir=ws.lake, log_db=ws.ingestion_log)
        if done.files:
            console.print(
                f"{contract.name}: folded {done.files:,} stream file(s) "
                f"in {len(done.partitions):,} partition(s)",
                highlight=False,
            )


def register(app: typer.Typer) -> None:
    """Add `churnops stream ...` to the command line."""
    app.add_typer(stream_app, name="stream")

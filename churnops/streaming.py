"""Wiring of the stream consumer to a workspace: where it writes, and the online refresh after each commit.

The ingestion stage knows nothing of features (imports flow left to right); this module, on the
command-line side, gives the consumer a hook that recomputes the touched customers' current
snapshot from the lake and loads it into the online store and the offline table
(`features.materialize.refresh_customers`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from churnops.contracts.feature_contract import load_feature_contract
from churnops.contracts.source_contract import load_source_contracts
from churnops.ingestion.stream.append import StreamTarget
from churnops.settings import Workspace
from churnops.storage.lock import workspace_lock

if TYPE_CHECKING:
    from feast import FeatureStore

    from churnops.ingestion.stream.consumer import Committed


def stream_target(ws: Workspace, *, stream: str, guard: threading.Lock | None = None) -> StreamTarget:
    """Where a workspace's stream consumer writes.

    Args:
        ws: The workspace.
        stream: The broker stream's name (recorded in the log).
        guard: Held while a commit swaps several lake files of one partition (see `StreamTarget`).

    Returns:
        The target.
    """
    return StreamTarget(
        guard=guard,
        lake_dir=ws.lake,
        quarantine_dir=ws.quarantine,
        log_db=ws.ingestion_log,
        contracts=load_source_contracts(),
        lateness=load_feature_contract().time.allowed_lateness,
        stream=stream,
    )


def commit_lock(ws: Workspace, *, command: str, wait: float) -> Callable[[], AbstractContextManager[object]]:
    """The workspace's writer lock, to be entered once per micro-batch.

    Args:
        ws: The workspace.
        command: What the holder record names.
        wait: Seconds to wait for another writer each time.

    Returns:
        A factory of lock contexts.
    """
    return lambda: workspace_lock(home=ws.home, command=command, wait=wait)


@dataclass
class OnlineRefresh:
    """The hook that brings the touched customers' served features up to the lake.

    Attributes:
        ws: The workspace.
        lock: The writer-lock factory (the refresh writes the offline table).
        guard: Held while the refresh reads the lake, so it never reads a partition half-way
            through a fold by a commit of the same process.
        store: The Feast store, opened on first use (importing Feast takes seconds).
        refreshed: Customers written so far.
        seconds: Time spent refreshing so far.
    """

    ws: Workspace
    lock: Callable[[], AbstractContextManager[object]]
    guard: threading.Lock = field(default_factory=threading.Lock)
    store: FeatureStore | None = None
    refreshed: int = 0
    seconds: float = 0.0
    _contract: object = field(default=None, repr=False)

    def open(self) -> None:
        """Open the Feast store and check the definitions are applied."""
        from churnops.errors import ChurnopsError
        from churnops.features.store import is_applied, open_store

        self.store = open_store(home=self.ws.home)
        self._contract = load_feature_contract()
        if not is_applied(self.store):
            raise ChurnopsError(
                f"the Feast definitions of {self.ws.home} are not applied, so the stream cannot refresh "
                "online features: run `churnops features apply` (or pass --no-online)"
            )

    def __call__(self, done: Committed) -> None:
        """Refresh the customers a committed micro-batch touched."""
        self.refresh(done.touched)

    def refresh(self, customer_ids: list[str]) -> None:
        """Refresh these customers now.

        Args:
            customer_ids: The customers.
        """
        from churnops.features.materialize import refresh_customers

        if self.store is None:
            self.open()
        started = time.perf_counter()
        with self.lock(), self.guard:
            self.refreshed += refresh_customers(
                store=self.store,
                lake_dir=self.ws.lake,
                features_dir=self.ws.features,
                contract=self._contract,
                customer_ids=customer_ids,
            )
        self.seconds += time.perf_counter() - started


class BackgroundRefresh:
    """Runs an `OnlineRefresh` on a thread of its own, so the consumer keeps committing meanwhile.

    Each committed micro-batch adds its customers to a pending set; the thread refreshes the
    whole set at once, so under load one refresh covers many micro-batches (latency stays about
    one commit plus one or two refreshes, whatever the rate). A failed refresh keeps its customers
    pending and is retried.

    Args:
        refresh: The refresh to run.
    """

    def __init__(self, refresh: OnlineRefresh) -> None:
        self.refresh = refresh
        self.pending: set[str] = set()
        self.errors = 0
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="online-refresh", daemon=True)
        self._thread.start()

    def __call__(self, done: Committed) -> None:
        """Queue the customers of a committed micro-batch."""
        with self._wake:
            self.pending.update(done.touched)
            self._wake.notify()

    def close(self, *, timeout: float = 60.0) -> None:
        """Refresh what is pending, then stop the thread (waiting up to `timeout` seconds)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self.pending and not self._closing:
                    self._wake.wait()
                if not self.pending:
                    return
                batch, self.pending = sorted(self.pending), set()
            try:
                self.refresh.refresh(batch)
            except Exception:  # a refresh that fails is retried with the next one
                self.errors += 1
                with self._wake:
                    self.pending.update(batch)
                    if self._closing:
                        return
                time.sleep(1.0)

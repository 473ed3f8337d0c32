"""One writer per workspace: an exclusive lock on `<home>/data/.churnops.lock`.

The lock is `fcntl.flock` on that file, so the kernel releases it when its holder ends in any way,
SIGKILL included: a dead holder's lock is simply free, and that is the stale-lock detection. The
lock file itself is never replaced or deleted (two processes must always lock the same inode).

Beside it, `<home>/data/.churnops.lock.json` records who holds it (pid, host, command, since),
written atomically once the lock is taken and removed before it is released. A second writer
reads it to name the holder; a record found by a process that has just taken the lock was left by
a holder that died, and is reported as taken over.

The lock is re-entrant within one process (a command that calls another writer's code while
holding it does not deadlock itself); it does not separate threads of one process. The home's
`data/` folder must be on a local file system: `flock` over NFS only excludes processes of one host.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from churnops.errors import ChurnopsError
from churnops.storage.atomic import write_atomic
from churnops.storage.layout import LOCK_FILE, LOCK_HOLDER_FILE

LOCK_WAIT_ENV = "CHURNOPS_LOCK_WAIT"
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a workspace lock.

    Attributes:
        pid: The holder's process id.
        host: The host it runs on.
        command: What it is doing, e.g. `churnops ingest`.
        argv: Its full command line.
        since: When it took the lock (UTC, ISO 8601).
    """

    pid: int
    host: str
    command: str
    argv: str
    since: str

    def describe(self) -> str:
        """One clause naming the holder, for messages.

        Returns:
            E.g. "pid 4242 (`churnops ingest`) since 2026-12-01T20:55:02Z on host web1, command line: ...".
        """
        return (
            f"pid {self.pid} (`{self.command}`) since {self.since} on host {self.host}, "
            f"command line: {self.argv}"
        )


@dataclass(frozen=True)
class Acquired:
    """What taking the lock found.

    Attributes:
        holder: This process's record.
        stale: The record of a holder that died without releasing the lock, now taken over.
        waited_for: The holder this process waited for, when it had to wait.
    """

    holder: Holder
    stale: Holder | None = None
    waited_for: Holder | None = None


class WorkspaceLockedError(ChurnopsError):
    """Another process is writing the workspace and did not finish within the allowed wait."""

    def __init__(self, *, home: Path, holder: Holder | None, waited: float) -> None:
        """Build the one-paragraph message naming the holder and what to do.

        Args:
            home: The workspace.
            holder: The holder's record (None when it has not written one yet).
            waited: Seconds this process waited before giving up (0: it did not wait).
        """
        self.home = home
        self.holder = holder
        self.waited = waited
        who = holder.describe() if holder is not None else "a process that has not written its record yet"
        waited_text = f" and did not release it within {waited:g} s" if waited > 0 else ""
        stop = f"kill {holder.pid}" if holder is not None else "stop it"
        super().__init__(
            f"workspace {home} is locked by another writer: {who}{waited_text}. Only one command may "
            f"write a workspace at a time (lock {home / LOCK_FILE}). Let it finish and run this again, "
            f"or wait for it: --wait SECONDS (or {LOCK_WAIT_ENV}=SECONDS). If that process is hung, "
            f"stop it ({stop}); the kernel frees a dead holder's lock and the next command takes over."
        )


@dataclass
class _Held:
    fd: int
    pid: int
    depth: int
    acquired: Acquired


# Locks this process holds, by lock file: what makes the lock re-entrant. Threads of one process
# share a held lock (the stream consumer commits on one while its online refresh runs on
# another); `_BOOKKEEPING` keeps their updates of the depth whole.
_HELD: dict[Path, _Held] = {}
_BOOKKEEPING = threading.Lock()


def read_holder(home: Path) -> Holder | None:
    """The holder record of a workspace, if there is one.

    Args:
        home: The workspace.

    Returns:
        The record, or None when there is none or it cannot be read.
    """
    try:
        data = json.loads((home / LOCK_HOLDER_FILE).read_text(encoding="utf-8"))
        return Holder(**{name: data[name] for name in Holder.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _live(holder: Holder | None) -> Holder | None:
    """The record, unless it names a process of this host that is gone (a record left by a dead holder)."""
    if holder is None or holder.host != socket.gethostname():
        return holder
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return holder
    return holder


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for_lock(
    fd: int, *, home: Path, wait: float, on_wait: Callable[[Holder | None], None] | None
) -> Holder | None:
    """Take the lock, waiting up to `wait` seconds; return the holder waited for (None if free at once)."""
    if _try_lock(fd):
        return None
    holder = _live(read_holder(home))
    if wait <= 0:
        raise WorkspaceLockedError(home=home, holder=holder, waited=0)
    if on_wait is not None:
        on_wait(holder)
    deadline = time.monotonic() + wait
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            raise WorkspaceLockedError(home=home, holder=_live(read_holder(home)) or holder, waited=wait)
        time.sleep(_POLL_SECONDS)
    return holder


def _acquire(
    *, home: Path, command: str, wait: float, on_wait: Callable[[Holder | None], None] | None
) -> _Held:
    lock_path = home / LOCK_FILE
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        waited_for = _wait_for_lock(fd, home=home, wait=wait, on_wait=on_wait)
        # Every holder removes its record before releasing: one still here was left by a dead holder.
        stale = read_holder(home)
        me = Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            command=command,
            argv=shlex.join(sys.argv),
            since=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        body = json.dumps(asdict(me), indent=2)
        write_atomic(home / LOCK_HOLDER_FILE, lambda tmp: tmp.write_text(body, encoding="utf-8"))
    except BaseException:
        os.close(fd)
        raise
    return _Held(fd=fd, pid=me.pid, depth=1, acquired=Acquired(holder=me, stale=stale, waited_for=waited_for))


def _release(home: Path, held: _Held) -> None:
    # The record goes first: once the lock is free, a record left behind can only mean a dead holder.
    (home / LOCK_HOLDER_FILE).unlink(missing_ok=True)
    fcntl.flock(held.fd, fcntl.LOCK_UN)
    os.close(held.fd)


@contextmanager
def workspace_lock(
    *,
    home: Path,
    command: str,
    wait: float = 0.0,
    on_wait: Callable[[Holder | None], None] | None = None,
) -> Iterator[Acquired]:
    """Hold the workspace's writer lock for the block.

    Args:
        home: The workspace (its `data/` folder is created when missing).
        command: What this process is doing, recorded for the messages of other writers.
        wait: Seconds to wait for another holder to finish; 0 fails at once.
        on_wait: Called once, with the holder's record, when this process starts waiting.

    Yields:
        What taking the lock found (a stale record taken over, the holder waited for). A nested
        block in the same process yields the outer block's result.

    Raises:
        WorkspaceLockedError: When another process holds the lock beyond `wait` seconds.
    """
    key = (home / LOCK_FILE).resolve()
    with _BOOKKEEPING:
        held = _HELD.get(key)
        if held is not None and held.pid == os.getpid():
            held.depth += 1
            entered = True
        else:
            entered = False
    if not entered:
        # Outside the bookkeeping lock: a thread of this process waiting here (another thread
        # took the lock a moment earlier) must not stop that thread from releasing it.
        held = _acquire(home=home, command=command, wait=wait, on_wait=on_wait)
        with _BOOKKEEPING:
            _HELD[key] = held
    try:
        yield held.acquired
    finally:
        with _BOOKKEEPING:
            held.depth -= 1
            last = held.depth == 0
            if last:
                del _HELD[key]
        if last:
            _release(home, held)

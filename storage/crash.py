"""Named crash points: a deterministic `kill -9` at a chosen step, for crash-safety tests.

A writer calls `crash_point("usage_events:committed")` at each step whose interruption matters.
With `CHURNOPS_CRASH_AT` set to that name the process kills itself with SIGKILL on the spot (no
cleanup, no `finally`), exactly as an operator's `kill -9` or the OOM killer would; unset, the
call does nothing. Tests run the real command in a subprocess with the variable set, so they never
depend on timing.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "CHURNOPS_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL when `CHURNOPS_CRASH_AT` names this point.

    Args:
        name: The point, e.g. `usage_events:renamed-2` or `promote.alias`.
    """
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)

"""Deterministic crash points for crash-safety tests.

A test names one point in `$CHURNOPS_CRASH_AT`; the process that reaches it kills itself with
SIGKILL, exactly as `kill -9` would at that instant: no `finally`, no `atexit`, no flush. Unset
(always, outside tests) it costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "CHURNOPS_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here, like `kill -9`, when `$CHURNOPS_CRASH_AT` names this point.

    Args:
        name: The point's name, e.g. `promote.alias`.
    """
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)

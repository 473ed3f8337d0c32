"""The one family of expected errors: bad input or a refused operation, never a bug.

Every stage's error for something a user can fix subclasses `ChurnopsError`, so the command line
catches one class and prints one paragraph instead of a traceback. This module imports nothing of
the project: contracts, storage and every stage may use it.
"""

from __future__ import annotations

from typing import ClassVar

BAD_INPUT = 2
REFUSED = 1


class ChurnopsError(Exception):
    """An error a user can fix; its message names what is wrong and what to do about it.

    Attributes:
        exit_code: The command line's exit status when this error ends a command: `BAD_INPUT` (2)
            for a file, an option or a setting that cannot be used; `REFUSED` (1) for an operation
            that was refused or could not be carried out.
    """

    exit_code: ClassVar[int] = BAD_INPUT

"""Progress of a long command on stderr: a Rich spinner per step on a terminal, plain lines otherwise.

stdout stays for results (tables, JSON), so `churnops promote --json | jq` keeps working while the
steps show on stderr.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from churnops.commands.common import err_console

Step = Callable[[str], AbstractContextManager[None]]


@contextmanager
def progress(command: str, *, console: Console | None = None) -> Iterator[Step]:
    """Show the steps of `command` while it runs.

    On a terminal each step is a spinner with its elapsed time that turns into a tick; without one
    (CI logs, pipes) each step is one line when it starts and one when it ends, with its seconds.

    Args:
        command: The command's name, prefixed to plain lines (e.g. `train`).
        console: Where to draw (default: stderr).

    Yields:
        `step(description)`, a context manager around one step's work.
    """
    out = console or err_console
    if not out.is_terminal:
        yield _plain_steps(command, out)
        return
    # The elapsed time comes before the description, so a narrow terminal cuts the words, not it.
    with Progress(
        SpinnerColumn(), TimeElapsedColumn(), TextColumn("{task.description}"), console=out, transient=False
    ) as bar:

        @contextmanager
        def step(description: str) -> Iterator[None]:
            task = bar.add_task(description, total=1)
            try:
                yield
            except BaseException:
                bar.update(task, description=f"[red]✗[/] {description}")
                bar.stop_task(task)
                raise
            bar.update(task, completed=1, description=f"[green]✓[/] {description}")

        yield step


def _plain_steps(command: str, out: Console) -> Step:
    @contextmanager
    def step(description: str) -> Iterator[None]:
        out.print(f"{command}: {description} …", highlight=False, markup=False)
        started = time.monotonic()
        try:
            yield
        except BaseException:
            out.print(f"{command}: {description} failed", highlight=False, markup=False)
            raise
        seconds = time.monotonic() - started
        out.print(f"{command}: {description} done in {seconds:.1f}s", highlight=False, markup=False)

    return step

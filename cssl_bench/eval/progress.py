"""Progress bars for the long parts of an evaluation (feature extraction, linear-probe training).

Off by default, so library calls and tests print nothing: the CLI turns them on with ``enable(console)``,
which keeps them only when that console (stderr) is a terminal. Bars are transient (they disappear when
their work is done) and only count steps: they never touch the data, the models or any random generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_console = None  # the rich Console bars draw on; None: no bars
_progress = None  # the live rich Progress while a bar is shown (nested bars share it)


def enable(console, on: bool = True) -> None:
    """Show bars on ``console`` when ``on`` and the console is a terminal; otherwise show none."""
    global _console
    _console = console if on and console is not None and getattr(console, "is_terminal", False) else None


def enabled() -> bool:
    return _console is not None


@contextmanager
def task(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar of ``total`` steps; yields ``advance(n=1)``. A no-op when bars are off."""
    global _progress
    if _console is None or not total or total < 1:
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    outer = _progress is None
    if outer:
        _progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=_console,
            transient=True,
        )
        _progress.start()
    prog = _progress
    tid = prog.add_task(description, total=total)
    try:
        yield lambda n=1: prog.advance(tid, n)
    finally:
        prog.remove_task(tid)
        if outer:
            prog.stop()
            _progress = None

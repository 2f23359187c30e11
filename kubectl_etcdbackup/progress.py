"""Progress bars for long transfers, on stderr, only when it is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[int], None]


def _noop(_n: int) -> None:
    pass


@contextmanager
def transfer_progress(description: str, total: int | None, enabled: bool | None = None) -> Iterator[Advance]:
    """Yield advance(nbytes). Disabled (a no-op) unless stderr is a TTY or enabled=True."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _noop
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)

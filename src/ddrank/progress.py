"""One progress reporter for long work: a rich bar on a terminal, silent otherwise."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter(AbstractContextManager["Reporter"]):
    """Counts units of work (student-epochs); draws a bar only when enabled and stderr is a TTY."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: int | None = None

    def __enter__(self) -> Reporter:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def start(self, description: str, total: int) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total)

    def advance(self, units: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, units)

    def log(self, message: str) -> None:
        """A line for the user (stderr), shown whether or not the bar is drawn."""
        self.console.print(message, highlight=False)


class Silent(Reporter):
    def __init__(self) -> None:
        super().__init__(enabled=False)

    def log(self, message: str) -> None:
        pass

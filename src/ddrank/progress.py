"""One progress reporter for long work: a rich bar on a terminal; without one, a line per finished unit of
work and a line at least every :data:`LOG_EVERY` seconds while one runs (so batch jobs and log files show
life); silent when disabled.

The bar names what trains now (phase, student model) and counts its unit (epochs) with an ETA; every
name is shown as typed, never read as rich markup.
"""

from __future__ import annotations

import sys
import time
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

# What a job's cell trains, in words: cells are named <source>[_<variant>] (see ddrank.metrics.definitions).
_PHASES = {"syn": "synthetic", "random": "random", "real": "real", "teacher": "teacher"}


LOG_EVERY = 15.0  # seconds between progress lines without a terminal


def phase_of(cell: str) -> str:
    """The phase a cell belongs to: synthetic, random, real or teacher (the cell itself otherwise)."""
    return _PHASES.get(cell.split("_", 1)[0], cell or "training")


class Reporter(AbstractContextManager["Reporter"]):
    """Counts units of work (student-epochs). Enabled on a TTY: a bar; enabled without one: a log line per
    finished unit and one every ``every`` seconds of work; disabled: nothing but :meth:`log`."""

    def __init__(self, enabled: bool = True, console: Console | None = None, every: float | None = None):
        self.console = console or Console(stderr=True)
        self.tty = self.console.is_terminal and sys.stderr.isatty()
        self.enabled = enabled and self.tty
        self.lines = enabled and not self.tty
        self._progress: Progress | None = None
        self._task: int | None = None
        self._title = ""
        self._what = ""
        self._unit = "epochs"
        self._total = 0
        self._done = 0
        self._started = 0.0
        self.every = LOG_EVERY if every is None else every
        self._next_line = 0.0

    def __enter__(self) -> Reporter:
        if self.enabled:
            self._progress = Progress(
                TextColumn("{task.description}", markup=False, style="bold"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}", markup=False),
                TimeElapsedColumn(),
                TextColumn("ETA"),
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

    def start(self, description: str, total: int, unit: str = "epochs") -> None:
        """A new piece of work of ``total`` units (epochs unless said otherwise)."""
        self._title, self._total, self._done, self._started = description, total, 0, time.perf_counter()
        self._what, self._unit, self._next_line = "", unit, self._started + self.every
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total, unit=unit)

    def describe(self, what: str) -> None:
        """Name what trains now (e.g. "synthetic · ConvNet-3 · 8 students") in the bar or the log lines."""
        self._what = what
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=f"{self._title}: {what}")

    def advance(self, units: int = 1) -> None:
        self._done += units
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, units)
        elif self.lines and time.perf_counter() >= self._next_line:  # long work still shows life
            self.log(f"{self._title}{': ' + self._what if self._what else ''} · {self._count()}")

    def finished(self, what: str) -> None:
        """One unit of work is done: without a terminal, a line with the overall count and an ETA."""
        if not self.lines:
            return
        self.log(f"{self._title}: {what} done · {self._count()}")

    def _count(self) -> str:
        """ "120/340 epochs · 52 s, ETA 95 s"; the next periodic line is due ``every`` seconds from now."""
        now = time.perf_counter()
        self._next_line = now + self.every
        elapsed = now - self._started
        done, total = min(self._done, self._total), self._total
        eta = f", ETA {elapsed * (total - done) / done:.0f} s" if 0 < done < total else ""
        return f"{done}/{total} {self._unit} · {elapsed:.0f} s{eta}"

    def log(self, message: str) -> None:
        """A line for the user (stderr), shown whether or not the bar is drawn."""
        self.console.print(message, highlight=False, markup=False, soft_wrap=not self.tty)


class Silent(Reporter):
    def __init__(self) -> None:
        super().__init__(enabled=False)

    def finished(self, what: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass

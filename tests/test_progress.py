"""Progress: a bar that names the phase, the student and the unit on a terminal; one line per finished
unit of work without one; nothing when disabled; names shown as typed."""

from __future__ import annotations

import io

from rich.console import Console

from ddrank.progress import Reporter, phase_of


def test_phases_are_named_from_cells():
    assert [phase_of(c) for c in ("syn", "syn_hard", "random_noaug", "real", "teacher")] == [
        "synthetic",
        "synthetic",
        "random",
        "real",
        "teacher",
    ]


def test_without_a_terminal_each_finished_unit_logs_one_line_with_count_and_eta():
    out = io.StringIO()
    with Reporter(enabled=True, console=Console(file=out, width=200)) as reporter:
        reporter.start("training students", 30)
        reporter.advance(10)
        reporter.finished("synthetic · [bold]ConvNet-3[/bold] · 8 students")
        reporter.advance(20)
        reporter.finished("random · ConvNet-3 · 8 students")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("training students: synthetic · [bold]ConvNet-3[/bold] · 8 students done")
    assert "10/30 epochs" in lines[0] and "ETA" in lines[0]
    assert "30/30 epochs" in lines[1] and "ETA" not in lines[1]


def test_disabled_progress_prints_nothing_but_logs():
    out = io.StringIO()
    with Reporter(enabled=False, console=Console(file=out, width=200)) as reporter:
        reporter.start("training students", 3)
        reporter.advance(3)
        reporter.finished("real · MLP · 1 student")
        reporter.log("done [in] 1 s")
    assert out.getvalue() == "done [in] 1 s\n"

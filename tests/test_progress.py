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


def test_without_a_terminal_long_work_logs_a_line_every_few_seconds(monkeypatch):
    out = io.StringIO()
    with Reporter(enabled=True, console=Console(file=out, width=80), every=0.0) as reporter:
        reporter.start("training a ConvNet-3 teacher on cifar10", 3)
        reporter.describe("real · ConvNet-3 · 1 student")
        for _ in range(3):
            reporter.advance()
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[3] for line in lines] == ["1/3 epochs", "2/3 epochs", "3/3 epochs"]
    assert lines[0].startswith("training a ConvNet-3 teacher on cifar10: real · ConvNet-3 · 1 student · ")
    assert "ETA" in lines[0] and "ETA" not in lines[2]
    out = io.StringIO()
    with Reporter(enabled=True, console=Console(file=out, width=80), every=3600.0) as reporter:
        reporter.start("training students", 100, unit="iterations")
        reporter.advance(50)
    assert out.getvalue() == ""  # not yet due


def test_dm_reports_each_matching_iteration():
    from ddrank.baselines import distribution_matching
    from ddrank.data.real import load_real

    calls: list[int] = []
    distribution_matching(load_real("digits"), 1, 0, iterations=2, progress=calls.append)
    assert calls == [1, 1]

"""Terminal output reads well in 80 columns and in a log file: tables fit COLUMNS (80 when piped without
it), a message or log line is never split, library text is shown as typed (never read as rich markup)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ddrank.cli import main
from ddrank.cli_commands import _print
from ddrank.progress import Reporter


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


@pytest.mark.parametrize("kind", ["models", "protocols", "formats", "baselines", "datasets", "losses"])
@pytest.mark.parametrize("columns", [None, "80", "60"])
def test_listings_fit_columns_when_piped(kind, columns, capsys, monkeypatch):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = run(capsys, "list", kind)
    assert code == 0
    assert widest(out) <= int(columns or 80), out


def test_listings_fit_80_columns_on_a_terminal(monkeypatch):
    from ddrank.cli_commands import _listing, _show

    for kind in ("models", "protocols", "formats", "baselines", "datasets"):
        buffer = io.StringIO()
        console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
        _show(console, _listing(kind))
        assert widest(buffer.getvalue()) <= 80, kind


def test_list_formats_shows_brackets_as_typed(capsys):
    _, out, _ = run(capsys, "list", "formats")
    assert "[[images, labels], ...]" in " ".join(out.split())


def test_a_piped_message_is_one_line_whatever_its_length():
    buffer = io.StringIO()
    line = "removed 3 evaluations " + "x" * 60 + " idlest rank 52.6 s [bold]as typed[/bold]"
    _print(Console(file=buffer, width=80), line)
    assert buffer.getvalue() == line + "\n"


def test_a_progress_log_line_is_never_split_without_a_terminal():
    buffer = io.StringIO()
    with Reporter(enabled=True, console=Console(file=buffer, width=80)) as reporter:
        reporter.start("training students on cifar10 under protocol dsa at IPC 10", 340)
        reporter.advance(340)
        reporter.finished("synthetic · ConvNet-3 · 8 students · lr 0.01")
    (line,) = buffer.getvalue().splitlines()
    assert line.endswith(" s") and "340/340 epochs" in line


def test_plan_fits_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "plan", "--ipc", "1", "--world-size", "1,2", "--device", "cpu")
    assert code == 0 and "world size 2: estimated wall time" in out
    assert widest(out) <= 80, out


@pytest.mark.parametrize("protocol, dataset", [("dsa", "cifar10"), ("d4m", "cifar10"), ("sre2l", "cifar100")])
def test_dry_run_plan_is_readable_in_80_columns_and_json_keeps_the_raw_form(
    protocol, dataset, capsys, tmp_path
):
    out_json = tmp_path / "plan.json"
    args = ["evaluate", "--dry-run", "--dataset", dataset, "--protocol", protocol, "--ipc", "10"]
    code, out, _ = run(capsys, *args, "--json", out_json)
    assert code == 0
    plan = "\n".join(line for line in out.splitlines() if not line.startswith("wrote "))  # a path stays whole
    assert widest(plan) <= 80, out
    assert "{" not in out and "sgd {}" not in out
    assert "augmentation: " in out and "optimiser: " in out
    import json

    cells = json.loads(out_json.read_text())["plan"]["cells"]
    assert all(isinstance(cell["augment"], dict) and isinstance(cell["schedule"], dict) for cell in cells)


def test_dry_run_plan_says_the_training_space(capsys, tmp_path):
    """ZCA whitening changes what a set's values mean: the plan says it in one line, as --json does."""
    from pathlib import Path

    import torch

    datm = (
        Path(__file__).parent / "fixtures" / "ddranking-configs" / "eval" / "DATM" / "CIFAR10" / "IPC10.yaml"
    )
    torch.save({"images": torch.randn(100, 3, 32, 32), "labels": torch.randn(100, 10)}, tmp_path / "set.pt")
    code, out, err = run(capsys, "evaluate", "--dry-run", "--config", datm, "--images", tmp_path / "set.pt")
    assert code == 0, err
    assert "\ntraining space: ZCA-whitened (regularisation 0.1)\n" in out and widest(out) <= 80, out
    code, out, _ = run(
        capsys, "evaluate", "--dry-run", "--dataset", "cifar100", "--protocol", "dsa", "--ipc", "1"
    )
    assert code == 0 and "\ntraining space: normalised (cifar100 mean and std)\n" in out, out


def test_augmentation_and_schedule_in_words():
    from ddrank.planning import augment_words, schedule_words

    assert augment_words({"dsa": "color_crop_cutout_flip_scale_rotate"}) == (
        "DSA color, crop, cutout, flip, scale, rotate"
    )
    assert augment_words({}) == "none"
    flip_cutmix = {"transforms": [{"name": "flip", "p": 0.5}], "cutmix": 1.0}
    assert augment_words(flip_cutmix) == "flip p=0.5; CutMix β=1"
    assert schedule_words({}) == "step ×0.1 at 50%"
    assert schedule_words({"kind": "cosine", "period": 2.0}) == "cosine schedule period 2"


@pytest.mark.parametrize(
    "name, dataset", [("dsa", "cifar10"), ("d4m", "cifar10"), ("edc", "cifar10"), ("sre2l", "cifar100")]
)
def test_protocol_show_is_yaml_that_fits_80_columns_and_loads_back_to_the_protocol(name, dataset, capsys):
    import yaml

    from ddrank.protocols import load_protocol

    code, out, _ = run(capsys, "protocol", "show", name, "--dataset", dataset)
    assert code == 0
    assert widest(out) <= 80, out
    protocol = load_protocol(name, dataset=dataset)
    expected = protocol.model_dump(mode="json")
    expected["reference_source"] = expected["reference_source"] or "no published reference"
    assert yaml.safe_load(out) == expected
    assert out.startswith(f"# {protocol.name} v{protocol.version}")


def test_deviations_are_one_short_line_each_and_verbose_gives_the_reasons(capsys, tmp_path):
    import json

    out_json = tmp_path / "plan.json"
    args = ["evaluate", "--dry-run", "--dataset", "cifar10", "--protocol", "d4m", "--ipc", "10"]
    code, _, err = run(capsys, *args, "--json", out_json)
    assert code == 0
    deviations = json.loads(out_json.read_text())["deviations"]
    lines = err.splitlines()
    assert "--verbose" in lines[0] and widest(err) <= 80, err
    said = [line for line in lines if line.startswith("ddrank: deviation: ")]
    assert len(said) == len(deviations) == len(lines) - 1
    for line, deviation in zip(said, deviations, strict=True):
        effect = "[moves scores" if deviation["moves_score"] else "[same scores"
        assert line.startswith(f"ddrank: deviation: {deviation['key']} {effect}"), line
    code, _, err = run(capsys, *args, "--verbose")
    assert code == 0
    for deviation in deviations:  # the full text, one unbroken line each
        assert " ".join(deviation["reason"].split()) in err


def test_a_deviation_summary_keeps_what_differs():
    from ddrank.protocols import Deviation

    full_data = Deviation(
        key="full_data",
        source_value="trained: sgd lr 0.01 wd 0.0005, step schedule, 1000 epochs, batch 256",
        ddrank_value="trained: sgd lr 0.01 wd 0.0005, step schedule, 200 epochs, batch 512",
        reason="DD-Ranking trains acc(real, hard) for the metric's num_epochs " * 4,
        moves_score=True,
    )
    wide = "full_data [moves scores] …1000 epochs, batch 256 → …200 epochs, batch 512"
    assert full_data.summary(80) == wide
    assert full_data.summary(61) == "full_data [moves scores] …1000 epochs… → …200 epochs…"
    selection = Deviation(
        key="selection",
        source_value="selection=reference",
        ddrank_value="selection=honest",
        reason="x",
        moves_score=True,
    )
    assert selection.summary() == "selection [moves scores] reference → honest"
    assert str(selection) == selection.line()


def test_list_protocols_gives_a_short_line_per_preset_and_long_gives_the_descriptions(capsys, monkeypatch):
    from ddrank.protocols import preset, preset_names

    monkeypatch.setenv("COLUMNS", "80")
    _, short, _ = run(capsys, "list", "protocols")
    _, long, _ = run(capsys, "list", "protocols", "--long")
    assert len(short.splitlines()) <= 3 * len(preset_names()) + 5 < len(long.splitlines())
    assert "--long" in short and "Embedded default, hard labels" in short
    from ddrank.cli_commands import _listing

    names, _, descriptions = _listing("protocols", long=True).columns
    shown = {str(n): str(d) for n, d in zip(names.cells, descriptions.cells, strict=True)}
    summaries = [str(text) for text in _listing("protocols").columns[2].cells]
    for name, summary in zip(preset_names(), summaries, strict=True):
        assert shown[name] == " ".join(preset(name)["description"].split())
        assert shown[name].startswith(summary) and len(summary) < len(shown[name])

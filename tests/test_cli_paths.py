"""Output paths, devices and conflicting flags on the command line: a bad one is refused in one line
(exit 2) before anything is read, trained or written, and never destroys an input or the store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from cli_checks import assert_one_line_error, run_cli
from ddrank.store import ResultStore


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A folder holding a synthetic set (set.pt) and a results store (s.sqlite), as the current folder."""
    monkeypatch.chdir(tmp_path)
    torch.save({"images": torch.randn(10, 1, 8, 8), "labels": torch.arange(10)}, tmp_path / "set.pt")
    ResultStore(tmp_path / "s.sqlite").close()
    return tmp_path


def contents(*paths: Path) -> list[bytes]:
    return [path.read_bytes() for path in paths]


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "--images", "set.pt", "--store", "s.sqlite", "--json", "s.sqlite"],
        ["evaluate", "--images", "set.pt", "--store", "s.sqlite", "--json", "./link.sqlite"],
        ["evaluate", "--images", "set.pt", "--store", "s.sqlite", "--json", "set.pt"],
        ["evaluate", "--images", "set.pt", "--store", "s.sqlite", "--json", "link.pt"],
        ["evaluate", "--images", "set.pt", "--labels", "set.pt", "--no-store", "--json", "set.pt"],
        ["export", "--store", "s.sqlite", "--out", "s.sqlite"],
        ["export", "--store", "s.sqlite", "--out", "link.sqlite"],
        ["leaderboard", "--store", "s.sqlite", "--format", "csv", "--out", "s.sqlite"],
        ["leaderboard", "--store", "link.sqlite", "--format", "html", "--out", "s.sqlite"],
        ["import", "s.sqlite", "--store", "link.sqlite"],
        ["demo", "--store", "s.sqlite", "--html", "s.sqlite"],
        ["calibrate", "--store", "s.sqlite", "--json", "s.sqlite"],
    ],
)
def test_an_output_over_the_store_or_an_input_is_refused(args, workdir, capsys, no_training):
    os.symlink("s.sqlite", workdir / "link.sqlite")
    os.symlink("set.pt", workdir / "link.pt")
    before = contents(workdir / "s.sqlite", workdir / "set.pt")
    code, _, err = run_cli(capsys, *args)
    expected = "give another path" if args[0] != "import" else "the results store itself"
    assert_one_line_error(code, err, expected)
    assert contents(workdir / "s.sqlite", workdir / "set.pt") == before


def test_the_default_store_is_protected_too(workdir, capsys, no_training, monkeypatch):
    monkeypatch.setenv("DDRANK_CACHE_DIR", str(workdir))
    os.rename(workdir / "s.sqlite", workdir / "results.sqlite")
    code, _, err = run_cli(capsys, "evaluate", "--images", "set.pt", "--json", "results.sqlite")
    assert_one_line_error(code, err, "--json results.sqlite is the results store")


def test_import_refuses_a_pipe_and_creates_no_store_for_a_refused_file(workdir, capsys):
    os.mkfifo(workdir / "fifo")
    code, _, err = run_cli(capsys, "import", "fifo", "--store", "new.sqlite")
    assert_one_line_error(code, err, "not a regular file")
    (workdir / "bad.json").write_text('{"format": "something else"}')
    code, _, err = run_cli(capsys, "import", "bad.json", "--store", "new.sqlite")
    assert_one_line_error(code, err, "not a ddrank results export")
    code, _, err = run_cli(capsys, "import", ".", "--store", "new.sqlite")
    assert_one_line_error(code, err, "is a folder, not a file")
    assert not list(workdir.glob("new.sqlite*"))


@pytest.mark.parametrize("device", ["mps", "meta", "xpu", "vulkan"])
def test_a_device_ddrank_cannot_train_on_is_refused_before_loading(device, workdir, capsys, no_training):
    code, _, err = run_cli(capsys, "evaluate", "--images", "set.pt", "--no-store", "--device", device)
    assert_one_line_error(code, err, f"--device {device!r} is not supported", "cpu or cuda")


def test_a_cuda_index_beyond_the_device_count_is_refused(workdir, capsys, no_training, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, _, err = run_cli(capsys, "evaluate", "--images", "set.pt", "--no-store", "--device", "cuda:7")
    assert_one_line_error(code, err, "--device 'cuda:7' does not exist", "2 CUDA device(s), cuda:0 to cuda:1")


@pytest.mark.parametrize(
    "args",
    [
        ["leaderboard", "--store", "s.sqlite", "--format", "html", "--out", "."],
        ["leaderboard", "--store", "s.sqlite", "--format", "html", "--out", "/proc/x.tex"],
        ["leaderboard", "--store", "s.sqlite", "--format", "html", "--out", "set.pt/x"],
        ["baseline", "herding", "--ipc", "1", "--out", "/proc/b.pt"],
        ["teacher", "train", "--dataset", "digits", "--model", "MLP", "--epochs", "1", "--out", "/proc/t.pt"],
        ["evaluate", "--images", "set.pt", "--no-store", "--json", "/proc/d.json"],
        ["evaluate", "--images", "set.pt", "--dry-run", "--json", "/proc/d.json"],
    ],
)
def test_an_unwritable_output_is_refused_before_any_work(args, workdir, capsys, no_training):
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, args[-2] + " " + args[-1])
    assert "results store" not in err


def test_a_failed_json_write_says_whether_anything_was_stored(workdir, monkeypatch):
    from ddrank.cli_commands import _write_json
    from ddrank.errors import InputError

    monkeypatch.setattr(Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(InputError, match="nothing was stored"):
        _write_json("out.json", {}, stored=False)
    with pytest.raises(InputError, match="the results are in the results store"):
        _write_json("out.json", {}, stored=True)


def test_a_failed_checkpoint_save_is_an_input_error(workdir, capsys, monkeypatch):
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("File /x cannot be opened.")

    monkeypatch.setattr(torch, "save", fail)
    code, _, err = run_cli(capsys, "baseline", "herding", "--ipc", "1", "--out", "b.pt")
    assert_one_line_error(code, err, "cannot write --out b.pt")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "nan"], "--lr nan: must be a finite number"),
        (["--lr", "inf"], "--lr inf: must be a finite number"),
        (["--lr", "0"], "--lr 0: must be greater than 0"),
        (["--lr", "-1"], "--lr -1: must be greater than 0"),
        (["--lr", "100"], "above the sanity bound"),
        (["--epochs", "100000000"], "exceeds the limit of 10000 epochs"),
    ],
)
def test_teacher_train_checks_epochs_and_lr_as_evaluate_does(flags, message, workdir, capsys, monkeypatch):
    import ddrank.evaluation.teachers

    monkeypatch.setattr(ddrank.evaluation.teachers, "fit", lambda *a, **k: pytest.fail("trained"))
    code, _, err = run_cli(
        capsys, "teacher", "train", "--dataset", "digits", "--model", "MLP", *flags, "--out", "t.pt"
    )
    assert_one_line_error(code, err, message)
    assert not (workdir / "t.pt").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--no-store", "--store", "x.sqlite"], "argument --store: not allowed with argument --no-store"),
        (["--quick", "--epochs", "3"], "argument --epochs: not allowed with argument --quick"),
        (
            ["--no-store", "--teacher", "set.pt"],
            "protocol 'digits' trains on hard labels and uses no teacher",
        ),
        (["--dry-run", "--teacher", "set.pt"], "protocol 'digits' trains on hard labels and uses no teacher"),
    ],
)
def test_conflicting_flags_are_refused(flags, message, workdir, capsys, no_training):
    code, _, err = run_cli(capsys, "evaluate", "--images", "set.pt", *flags)
    assert_one_line_error(code, err, message)
    assert not (workdir / "x.sqlite").exists()


@pytest.mark.parametrize("args", [["protocol", "show", "dsa"], ["list", "models"], ["--help"]])
def test_a_closed_stdout_ends_the_command_quietly_with_exit_0(args, ddrank_processes, tmp_path):
    processes = ddrank_processes(tmp_path)
    proc = processes.start(processes.command(*args))
    proc.stdout.close()  # the reader is gone before anything is printed, as `| head -0` would be
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err == ""


def help_of(capsys, *command: str) -> str:
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0
    return " ".join(out.split())


def test_help_texts_are_printed_as_meant(capsys):
    assert "95% CI" in help_of(capsys, "compare") and "%%" not in help_of(capsys, "compare")
    for command in (["leaderboard"], ["compare", "a", "b"], ["rm"]):
        text = help_of(capsys, *command[:1])
        assert "M (teachers relabel every batch)" in text and "mixed" not in text
    for command in (["baseline"], ["export"], ["import"], ["protocol"], ["teacher"]):
        text = help_of(capsys, *command)
        description = text.split(" options:")[0].split("] ")[-1]
        assert len(description) > 40, (command, text)
    for command in (["baseline"], ["teacher", "train"]):
        assert "--download" in help_of(capsys, *command)


@pytest.mark.parametrize("command", [["leaderboard"], ["compare", "a", "b"], ["rm", "--yes"]])
def test_an_unknown_label_mode_is_refused(command, capsys):
    code, _, err = run_cli(capsys, *command, "--labels", "soft")
    assert_one_line_error(code, err, "argument --labels: must be hard, S", "got 'soft'")


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "--bogus"],
        ["teacher", "train", "--dataset", "digits", "--model", "MLP", "--out", "t.pt", "--bogus"],
        ["protocol", "show", "dsa", "--bogus"],
    ],
)
def test_an_unknown_option_points_to_the_subcommands_help(args, capsys):
    code, _, err = run_cli(capsys, *args)
    command = " ".join(a for a in args[:2] if not a.startswith("-") and a != "dsa")
    assert_one_line_error(code, err, "unrecognized arguments: --bogus", f"see ddrank {command} --help")


@pytest.mark.parametrize(
    "command", [["baseline", "herding", "--ipc", "1"], ["teacher", "train", "--model", "MLP"]]
)
def test_a_missing_dataset_suggests_a_download_flag_the_command_has(command, workdir, capsys):
    code, _, err = run_cli(capsys, *command, "--dataset", "cifar10", "--out", "x.pt")
    assert_one_line_error(code, err, "pass --download")
    code, _, err = run_cli(capsys, *command, "--dataset", "cifar10", "--out", "x.pt", "--download", "--zzz")
    assert_one_line_error(code, err, "unrecognized arguments: --zzz;")  # --download itself is taken


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["evaluate", "--images", "set.pt", "--no-store", "--labels", "folder"],
            "labels file folder is a folder, not a file",
        ),
        (
            ["evaluate", "--images", "set.pt", "--no-store", "--protocol", "folder.yaml"],
            "is a folder, not a file",
        ),
        (
            [
                "evaluate",
                "--images",
                "set.pt",
                "--no-store",
                "--protocol",
                "digits-kd",
                "--teacher",
                "folder",
            ],
            "teacher checkpoint 'folder' for ConvNet-2-W16 is a folder, not a file",
        ),
        (["leaderboard", "--store", "folder"], "results store folder is a folder, not a file"),
        (["plan", "--ipc", "1", "--store", "folder"], "results store folder is a folder, not a file"),
        (
            ["evaluate", "--images", "set.pt", "--store", "folder"],
            "results store folder is a folder, not a file",
        ),
        (
            ["evaluate", "--images", "set.pt", "--no-store", "--protocol", "set.pt"],
            "is a file, not a protocol YAML",
        ),
        (
            ["evaluate", "--images", "set.pt", "--no-store", "--protocol", "/etc/passwd"],
            "not a protocol YAML",
        ),
    ],
)
def test_a_directory_or_a_foreign_file_is_named_as_such(args, message, workdir, capsys, no_training):
    (workdir / "folder").mkdir()
    (workdir / "folder.yaml").mkdir()
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, message)
    assert "does not exist" not in err and "unknown protocol" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["baseline", "herding", "--ipc", "1", "--seed", "-1", "--out", "b.pt"],
            "--seed must be a non-negative",
        ),
        (
            ["baseline", "herding", "--ipc", "1", "--out", "b.txt"],
            "give a .pt (torch) or .npz (numpy) file name",
        ),
        (
            ["teacher", "train", "--dataset", "digits", "--model", "MLP", "--seed", "-1", "--out", "t.pt"],
            "--seed",
        ),
        (["evaluate", "--images", "set.pt", "--no-store", "--method", ""], "method name must be a non-empty"),
        (
            ["evaluate", "--images", "set.npz", "--no-store", "--format", "pt"],
            "not a torch file (format 'pt')",
        ),
        (["evaluate", "--images", "set.pt", "--no-store", "--format", "npz"], "not a numpy .npz archive"),
    ],
)
def test_baseline_seed_out_format_and_method_are_checked(args, message, workdir, capsys, no_training):
    import numpy as np

    np.savez(workdir / "set.npz", images=np.zeros((10, 1, 8, 8), np.float32), labels=np.arange(10))
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, message)


def test_baseline_writes_the_format_its_suffix_names(workdir, capsys):
    from ddrank.data.files import FileKind, classify
    from ddrank.data.synthetic import load_synthetic

    for name in ("b.pt", "b.npz"):
        code, _, err = run_cli(capsys, "baseline", "herding", "--ipc", "1", "--out", name)
        assert code == 0, err
    assert classify(workdir / "b.npz").kind is FileKind.NPZ
    assert classify(workdir / "b.pt").kind is FileKind.TORCH_ZIP
    pt, npz = load_synthetic(workdir / "b.pt"), load_synthetic(workdir / "b.npz")
    assert torch.equal(pt.images, npz.images) and torch.equal(pt.labels, npz.labels)


def test_a_labels_file_replacing_the_sets_labels_is_said(workdir, capsys, no_training):
    torch.save(torch.arange(10), workdir / "labels.pt")
    torch.save(torch.randn(10, 1, 8, 8), workdir / "bare.pt")
    code, _, err = run_cli(capsys, "evaluate", "--images", "set.pt", "--labels", "labels.pt", "--dry-run")
    assert code == 0, err
    assert "ddrank: note: the labels of labels.pt replace the labels stored in synthetic set set.pt" in err
    code, _, err = run_cli(capsys, "evaluate", "--images", "bare.pt", "--labels", "labels.pt", "--dry-run")
    assert code == 0 and "note" not in err, err
    assert "replaces labels stored with the set" in " ".join(run_cli(capsys, "evaluate", "--help")[1].split())

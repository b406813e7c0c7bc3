"""The command line under interruption, internal failure, read-only media, damaged stores and
diverging students: one line on stderr and a distinct exit code for each, finished work kept."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import ddrank.cli_commands
import ddrank.engine.runner
import ddrank.evaluation.evaluator
from cli_checks import run_cli
from ddrank.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, main
from ddrank.evaluation import Evaluation, RoundResult, Run
from ddrank.metrics.definitions import metric_definition
from ddrank.protocols import load_protocol
from ddrank.store import ResultStore


def one_line(err: str, *fragments: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def small_protocol(folder: Path, **changes: Any) -> Path:
    digits = load_protocol("digits")
    updates = {"epochs": 40, "rounds": 2, "lr_grid": [0.03, 0.1]} | changes
    protocol = digits.with_overrides(full_data=digits.full_data.model_copy(update={"epochs": 6}), **updates)
    doc = protocol.model_dump(mode="json")
    for key in ("dataset", "ipc"):
        doc.pop(key)
    (folder / "small.yaml").write_text(yaml.safe_dump(doc))
    return folder / "small.yaml"


def digits_set(folder: Path, scale: float = 1.0) -> Path:
    images = torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * scale
    torch.save({"images": images, "labels": torch.arange(10).repeat_interleave(10)}, folder / "set.pt")
    return folder / "set.pt"


# ---- signals and internal errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raised, code, fragment",
    [
        (KeyboardInterrupt, EXIT_INTERRUPTED, "ddrank: interrupted"),
        (Terminated, EXIT_TERMINATED, "ddrank: terminated (SIGTERM)"),
    ],
)
def test_an_interruption_is_one_line_with_its_exit_code(raised, code, fragment, monkeypatch, capsys):
    def stop(*args: Any) -> int:
        raise raised()

    monkeypatch.setattr(ddrank.cli_commands, "cmd_list", stop)
    got, out, err = run_cli(capsys, "list", "models")
    assert got == code
    one_line(err, fragment)


def test_an_internal_error_is_one_line_naming_its_log(monkeypatch, capsys):
    def broken(*args: Any) -> int:
        return {}["missing"]

    monkeypatch.setattr(ddrank.cli_commands, "cmd_list", broken)
    code, out, err = run_cli(capsys, "list", "models")
    assert code == 1  # never 2: an internal error is not the input's fault
    one_line(err, "ddrank: internal error: KeyError", "details in ", "please report it")
    log = Path(err.split("details in ")[1].split(")")[0])
    assert log.parent == Path(os.environ["DDRANK_CACHE_DIR"]) / "logs"
    text = log.read_text()
    assert "Traceback" in text and "broken" in text and "command: ddrank list models" in text


def test_signal_handlers_are_restored_after_main(capsys):
    before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)]
    run_cli(capsys, "--version")
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)] == before


# A library whose import receives the signal and swallows every exception, as C code that clears
# errors does; the command then works for a while. The signal must still stop the command, right
# after the import, and in one line.
SWALLOWING_MODULE = """
import os, signal, time
try:
    os.kill(os.getpid(), signal.{name})
    time.sleep(0.2)
except BaseException:
    pass
"""
COMMAND_IMPORTING_IT = """
import argparse, sys, time
import ddrank.cli as cli
sys.path.insert(0, sys.argv[1])
def work(args, console):
    import swallowing
    time.sleep(30)
    return 0
parser = cli.build_parser
def build():
    p = parser()
    parse = p.parse_args
    p.parse_args = lambda argv=None: argparse.Namespace(**{**vars(parse(argv)), "run": work})
    return p
cli.build_parser = build
sys.exit(cli.main(["list", "models"]))
"""


@pytest.mark.parametrize(
    "name, code, fragment",
    [("SIGINT", EXIT_INTERRUPTED, "ddrank: interrupted"), ("SIGTERM", EXIT_TERMINATED, "ddrank: terminated")],
)
def test_a_signal_inside_an_import_that_swallows_it_still_stops_the_command(name, code, fragment, tmp_path):
    (tmp_path / "swallowing.py").write_text(SWALLOWING_MODULE.format(name=name))
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", COMMAND_IMPORTING_IT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    one_line(proc.stderr, fragment)
    assert time.time() - started < 25  # stopped after the import, not after the 30 s of work


def _wait_for_jobs(store_path: Path, count: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists():
            with ResultStore(store_path, readonly=True) as store:
                if store.job_count() >= count:
                    return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} jobs finished before the deadline (exit {proc.poll()})")


def _jobs(store_path: Path) -> dict[str, str]:
    with ResultStore(store_path, readonly=True) as store:
        return {row["key"]: row["created"] for row in store.jobs()}


def _exited(proc: subprocess.Popen, code: int) -> bool:
    """Whether ``proc`` exited with ``code`` or, for Ctrl-C, was ended by SIGINT: Python ends itself so
    when a KeyboardInterrupt crossed a nested interpreter call (some libraries run code that way), and
    a shell shows both as 130."""
    return proc.returncode == code or (code == EXIT_INTERRUPTED and proc.returncode == -signal.SIGINT)


@pytest.mark.parametrize(
    "signum, code, fragment",
    [
        (signal.SIGINT, EXIT_INTERRUPTED, "ddrank: interrupted"),
        (signal.SIGTERM, EXIT_TERMINATED, "ddrank: terminated (SIGTERM)"),
    ],
)
def test_a_signal_during_start_up_is_one_line(signum, code, fragment, tmp_path, ddrank_processes):
    processes = ddrank_processes(tmp_path)
    args = ["evaluate", "--images", digits_set(tmp_path), "--device", "cpu", "--no-progress", "--no-store"]
    proc = processes.start(processes.command(*args))
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.exists():
        proc.kill()
        pytest.skip("needs /proc to see when the process loads torch")
    deadline = time.time() + 120
    while "libtorch" not in maps.read_text() and time.time() < deadline:  # torch loads in main()
        time.sleep(0.02)
    proc.send_signal(signum)  # importing torch, parsing or loading: start-up is not over
    out, err = proc.communicate(timeout=120)
    assert _exited(proc, code), (proc.returncode, err)
    one_line(err, fragment)


@pytest.mark.slow
def test_sigterm_then_ctrl_c_mid_training_keep_finished_jobs_and_a_rerun_trains_the_rest(
    tmp_path, ddrank_processes
):
    processes = ddrank_processes(tmp_path)
    store_path = tmp_path / "r.sqlite"
    protocol = small_protocol(tmp_path, epochs=15)
    args = ["evaluate", "--images", digits_set(tmp_path), "--protocol", protocol]
    args += ["--device", "cpu", "--no-progress", "--store", store_path, "--max-members", "1"]
    args += ["--json", tmp_path / "out.json"]
    kept: dict[str, str] = {}
    for signum, code, fragment in (
        (signal.SIGTERM, EXIT_TERMINATED, "ddrank: terminated (SIGTERM)"),
        (signal.SIGINT, EXIT_INTERRUPTED, "ddrank: interrupted"),
    ):
        proc = processes.start(processes.command(*args))
        _wait_for_jobs(store_path, len(kept) + 2, proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        assert _exited(proc, code), (proc.returncode, err)
        said = [line for line in err.splitlines(keepends=True) if not line.startswith("ddrank: deviation")]
        one_line(
            "".join(said), fragment, "rerun the command to resume"
        )  # after the deviations before training
        now = _jobs(store_path)
        assert len(now) >= len(kept) + 2 and all(now[k] == created for k, created in kept.items())
        kept = now
        assert not (tmp_path / "out.json").exists()
    processes.run(*args)
    final = _jobs(store_path)
    assert len(final) > len(kept)
    assert all(final[key] == created for key, created in kept.items())  # nothing finished was retrained
    assert len(json.loads((tmp_path / "out.json").read_text())["evaluations"][0]["per_round"]) == 2


# ---- stores ----------------------------------------------------------------------------------------


def _evaluation(method: str, shift: float) -> Evaluation:
    definition = metric_definition("lrs")
    rounds = []
    for r in range(3):
        values = {"acc_syn": 0.5 + shift + r / 100, "acc_random": 0.4, "acc_real": 0.9}
        values |= definition.scores(values, 0.5)
        runs = {"syn": [Run(0.01, values["acc_syn"], None, values["acc_syn"])]}
        rounds.append(RoundResult(r, 100 + r, values, {"syn": 0.01}, runs))
    return Evaluation(
        method, "digits", 10, "lrs", 0.5, "digits", "h" * 16, "ConvNet-3", "hard", "honest", rounds, None,
        {"base_seed": 0, "synthetic_fingerprint": f"fp-{method}"},
    )  # fmt: skip


def _recorded_store(path: Path) -> None:
    with ResultStore(path) as store:
        for method, shift in (("dm", 0.1), ("herding", 0.0)):
            store.record_evaluation(_evaluation(method, shift).to_dict())


def _read_commands(store: Path, out: Path) -> list[list[Any]]:
    return [
        ["leaderboard", "--store", store, "--format", "csv"],
        ["compare", "dm", "herding", "--store", store],
        ["export", "--store", store, "--out", out],
    ]


def test_reading_commands_never_write_the_store(tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    _recorded_store(store)
    before = store.read_bytes()
    for command in _read_commands(store, tmp_path / "out.json"):
        code, out, err = run_cli(capsys, *command)
        assert code == 0, err
    assert store.read_bytes() == before
    assert not Path(str(store) + "-wal").exists() or Path(str(store) + "-wal").stat().st_size == 0
    assert json.loads((tmp_path / "out.json").read_text())["format"] == "ddrank-results"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; see the read-only mount test")
def test_reading_commands_work_on_a_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "shared"
    folder.mkdir()
    _recorded_store(folder / "r.sqlite")
    (folder / "r.sqlite").chmod(0o444)
    folder.chmod(0o555)
    try:
        for command in _read_commands(folder / "r.sqlite", tmp_path / "out.json"):
            code, out, err = run_cli(capsys, *command)
            assert code == 0, err
        code, _, err = run_cli(capsys, "import", tmp_path / "out.json", "--store", folder / "r.sqlite")
        assert code == 2
        one_line(err, "read-only")
    finally:
        folder.chmod(0o755)


def _read_only_media(folder: Path) -> dict:
    """In a private mount namespace: record a store, remount its folder read-only, run the readers."""
    import contextlib
    import io

    _recorded_store(folder / "r.sqlite")
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    out: dict[str, Any] = {}
    out_file = Path("/tmp") / f"ddrank-export-{os.getpid()}.json"
    for command in _read_commands(folder / "r.sqlite", out_file):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            out[command[0]] = (main([str(a) for a in command]), err.getvalue())
    out_file.unlink(missing_ok=True)
    return out


def test_reading_commands_work_on_read_only_media(tmp_path):
    from test_store import _on_a_small_filesystem

    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    folder = tmp_path / "media"
    folder.mkdir()
    out = _on_a_small_filesystem(_read_only_media, folder)
    if "setup_error" in out:
        pytest.skip(f"this machine does not allow a private mount: {out['setup_error']}")
    assert "error" not in out, out.get("error")
    assert all(code == 0 for code, _ in out.values()), out


def test_a_foreign_sqlite_file_is_refused_unchanged(tmp_path, capsys, no_training):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    conn.executemany("INSERT INTO orders (item) VALUES (?)", [("a",), ("b",)])
    conn.commit()
    conn.close()
    before = path.read_bytes()
    assert before[18:20] == b"\x01\x01"  # rollback journal: a WAL switch would make these 2, 2
    code, _, err = run_cli(capsys, "evaluate", "--images", digits_set(tmp_path), "--store", path)
    assert code == 2
    one_line(err, "not a ddrank results store", "orders")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db", "set.pt"]


def test_a_corrupt_store_is_refused_before_anything_trains_in_under_a_second(tmp_path, capsys, no_training):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.record_evaluation(_evaluation("dm", 0.1).to_dict())
    conn = sqlite3.connect(path)
    conn.execute("UPDATE evaluations SET payload = 'not json'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "evaluate", "--images", digits_set(tmp_path), "--store", path)
    assert time.perf_counter() - started < 1.0
    assert code == 2
    one_line(err, "damaged payload", str(path))
    assert path.read_bytes() == before


# ---- warnings and divergence ------------------------------------------------------------------------


def test_value_warnings_name_their_flag_and_strict_refuses_them(tmp_path, capsys, no_training):
    pixels = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    torch.save(pixels, tmp_path / "p.pt")
    args = ["evaluate", "--images", tmp_path / "p.pt", "--no-store", "--no-progress", "--device", "cpu"]
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and err.startswith("ddrank: warning: ")  # warned, then training (refused here)
    warning = err.splitlines()[0]
    assert "look like 0..255 pixels" in warning and "--space pixel" in warning
    code, _, err = run_cli(capsys, *args, "--strict")
    assert code == 2
    one_line(err, "look like 0..255 pixels", "--strict")


@pytest.mark.parametrize("selection", ["honest", "reference"])
def test_huge_values_train_and_report_the_diverged_runs(tmp_path, capsys, selection):
    protocol = small_protocol(
        tmp_path, epochs=4, rounds=1, lr_grid=[0.01, 0.1], selection=selection, eval_every=2
    )
    syn = digits_set(tmp_path, scale=1e30)
    code, out, err = run_cli(
        capsys, "evaluate", "--images", syn, "--protocol", protocol, "--device", "cpu", "--no-progress",
        "--no-store", "--json", tmp_path / "out.json", "--real-acc", "0.9",
    )  # fmt: skip
    assert code == 0, err
    lines = err.splitlines()
    assert any("far outside any image space" in line for line in lines)
    assert any("2 of its" in line and "training runs diverged" in line for line in lines), err
    result = json.loads((tmp_path / "out.json").read_text())["evaluations"][0]
    assert result["diverged"] == 2
    runs = result["per_round"][0]["runs"]
    assert all(run["diverged"] and run["diverged_epoch"] == 1 for run in runs["syn"])
    assert not any(run["diverged"] for run in runs["random"])
    assert Evaluation.from_dict(result).diverged == 2
    if (
        selection == "reference"
    ):  # every checkpoint follows the divergence: DD-Ranking's NaN weights score 1/C
        assert [run["best_test_acc"] for run in runs["syn"]] == [0.1, 0.1]
        assert result["per_round"][0]["acc_syn"] == 0.1


def test_the_python_api_takes_strict_and_max_bytes(tmp_path, no_training):
    from ddrank import evaluate
    from ddrank.errors import InputError

    pixels = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    with pytest.raises(InputError, match=r"look like 0\.\.255 pixels.*--space pixel.*strict=True"):
        evaluate(pixels, device="cpu", strict=True)
    torch.save(pixels, tmp_path / "p.pt")
    with pytest.raises(InputError, match="more than the limit of 64 B"):
        evaluate(tmp_path / "p.pt", device="cpu", max_bytes=64)

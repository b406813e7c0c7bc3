"""``ddrank calibrate`` and the calibration warning of ``ddrank evaluate``, on digits with the small
published-values fixture (tests/fixtures/calibration/digits.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import ddrank
from ddrank.calibration import FLAG_Z
from ddrank.cli import main
from ddrank.data.synthetic import load_synthetic
from ddrank.errors import ConfigError
from ddrank.evaluation import Evaluation, Evaluator
from ddrank.settings import RunSettings
from ddrank.store import ResultStore

TABLE = Path(__file__).parent / "fixtures" / "calibration" / "digits.yaml"
ROUNDS, LRS = 2, [0.03, 0.1]
ENTRY_KEYS = {"cell", "ipc", "measured", "published_mean", "published_std", "z", "source"}


def quick_protocol(tmp_path: Path, name: str = "digits", **changes) -> Path:
    """A few epochs of the digits recipe under the preset's name, so the fixture's values apply."""
    protocol = {
        "model": "ConvNet-2-W16",
        "augment": {"dsa": "color_crop_cutout_scale_rotate"},
        "epochs": 2,
        "lr_grid": LRS,
        "rounds": ROUNDS,
        "full_data": {"lr": 0.1, "epochs": 1, "batch_size": 128},
    } | changes
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "datasets": ["digits"], "protocol": protocol}))
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_calibrate_prints_each_baseline_beside_its_published_value(tmp_path, capsys):
    out_json = tmp_path / "calibration.json"
    code, out, err = run(
        capsys, "calibrate", "--protocol", quick_protocol(tmp_path), "--calibration", TABLE,
        "--ipc", "1,50", "--no-store", "--device", "cpu", "--no-progress", "--json", out_json,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("calibration · digits · protocol digits · ConvNet-2-W16 · 2 rounds")
    rows = {line.split("  ")[0].strip(): line for line in lines[2:5]}
    assert set(rows) == {"random, IPC 1", "random, IPC 50", "whole dataset"}
    assert "67.9 ± 9.0 [1]" in rows["random, IPC 1"] and "98.8 ± 0.2 [2]" in rows["whole dataset"]
    assert "not published" in rows["random, IPC 50"] and "no published value" in rows["random, IPC 50"]
    assert any(line.startswith("[1] ddrank's digits preset") for line in lines)
    report = json.loads(out_json.read_text())
    assert report["dataset"] == "digits" and report["rounds"] == ROUNDS and report["threshold"] == FLAG_Z
    by_ipc = {r["ipc"]: r for r in report["rows"]}
    assert set(by_ipc) == {1, 50, None} and by_ipc[50]["z"] is None and by_ipc[50]["source"] is None
    for row in (by_ipc[1], by_ipc[None]):
        assert len(row["per_round"]) == ROUNDS
        assert row["measured"] == pytest.approx(sum(row["per_round"]) / ROUNDS)
        z = (row["measured"] - row["published_mean"]) / row["published_std"]
        assert row["z"] == pytest.approx(z)
        assert row["flagged"] == (abs(z) > FLAG_Z) and row["verdict"] == ("ok" if abs(z) <= 3 else "below")
    # One epoch of the whole-data recipe cannot reach what the full recipe reaches: flagged, and said so.
    assert by_ipc[None]["flagged"] and "FLAGGED: below" in rows["whole dataset"]
    assert "baselines lie more than 3 published std" in lines[-1]


def test_a_later_evaluation_reuses_the_calibration_jobs_and_warns(tmp_path, capsys):
    protocol, store_path = quick_protocol(tmp_path), tmp_path / "results.sqlite"
    common = ["--protocol", protocol, "--calibration", TABLE, "--store", store_path, "--device", "cpu"]
    code, _, err = run(capsys, "calibrate", "--ipc", "10", "--no-progress", *common)
    assert code == 0, err
    with ResultStore(store_path) as store:
        calibrated = store.job_count()
    assert calibrated == ROUNDS * len(LRS) + ROUNDS  # random subsets over the lr grid, whole data once
    assert run(capsys, "baseline", "herding", "--ipc", "10", "--out", tmp_path / "h.pt")[0] == 0
    out_json = tmp_path / "eval.json"
    code, _, err = run(capsys, "evaluate", "--images", tmp_path / "h.pt", "--json", out_json, *common)
    assert code == 0, err
    with ResultStore(store_path) as store:
        assert store.job_count() - calibrated == ROUNDS * len(LRS)  # only the synthetic set trained
    result = json.loads(out_json.read_text())["evaluations"][0]
    entries = {e["cell"]: e for e in result["calibration"]}
    assert set(entries) == {"random", "real"} and all(set(e) == ENTRY_KEYS for e in entries.values())
    assert entries["random"]["measured"] == pytest.approx(result["acc_random_mean"])
    assert entries["real"]["measured"] == pytest.approx(result["acc_real_mean"])
    assert entries["random"]["ipc"] == 10 and entries["real"]["ipc"] is None
    assert entries["real"]["published_mean"] == 0.988 and "acc_real" in entries["real"]["source"]
    warnings = [line for line in err.splitlines() if line.startswith("ddrank: warning:")]
    flagged = [e for e in entries.values() if abs(e["z"]) > FLAG_Z]
    assert len(warnings) == len(flagged) >= 1  # the whole-data baseline at least (one epoch)
    assert any(
        f"whole-data accuracy on digits is {100 * entries['real']['measured']:.1f}%" in w for w in warnings
    )
    assert Evaluation.from_dict(result).calibration == result["calibration"]


def test_no_published_value_means_no_calibration_entry(tmp_path):
    settings = RunSettings(protocol=str(quick_protocol(tmp_path, name="mine")), rounds=1, device="cpu")
    syn = load_synthetic(torch.randn(10, 1, 8, 8), torch.arange(10))
    result = Evaluator(settings).evaluate_set(syn, "noise")
    assert result.calibration == [] and "calibration" not in result.to_dict()


def test_calibration_refuses_bad_input_in_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "calibrate", "--ipc", "1,x", "--no-store")
    assert code == 2 and "--ipc takes comma-separated positive integers" in err and err.count("\n") == 1
    code, _, err = run(capsys, "calibrate", "--calibration", tmp_path / "none.yaml", "--no-store")
    assert code == 2 and "cannot read the published-values table" in err
    with pytest.raises(ConfigError, match="soft labels .* hard-label protocol"):
        ddrank.calibrate([1], protocol="digits-kd", device="cpu")


def test_ars_compares_its_augmented_random_subsets(tmp_path):
    protocol = str(quick_protocol(tmp_path))
    syn = load_synthetic(torch.randn(10, 1, 8, 8), torch.arange(10))
    result = ddrank.evaluate(syn.images, syn.labels, protocol=protocol, metric="ars", rounds=1,
                             calibration=str(TABLE), device="cpu")  # fmt: skip
    [entry] = result.calibration
    assert entry["cell"] == "random" and entry["ipc"] == 1 and entry["published_mean"] == 0.679
    assert entry["measured"] == result.rounds[0].values["acc_random_aug"]

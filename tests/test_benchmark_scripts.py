"""The benchmark scripts a GPU run depends on work before that run: device time is too scarce to find
a broken script there. Each runs here at a tiny size on the CPU and writes the figures BENCHMARKS.md
reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION = ROOT / "benchmarks" / "gpu_session.sh"


def _run(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_gpu_session_script_parses_and_handles_every_default_step():
    assert subprocess.run(["bash", "-n", str(SESSION)], capture_output=True).returncode == 0
    text = SESSION.read_text()
    defaults = re.search(r"steps=\$\{\*:-([^}]*)\}", text).group(1).split()
    handled = set(re.findall(r"^\s+([a-z-]+)\) ", text, flags=re.MULTILINE))
    assert defaults and set(defaults) <= handled, set(defaults) - handled
    for script in set(re.findall(r"benchmarks/\w+\.py", text)):
        assert (ROOT / script).is_file(), script
    for test_path in set(re.findall(r"tests/[\w/]+\.py", text)):
        assert (ROOT / test_path).is_file(), test_path


def test_protocol_speed_runs_and_reports_its_figures(tmp_path):
    out = tmp_path / "speed.json"
    done = _run(
        "benchmarks/protocol_speed.py", "--small", "--epochs", "2", "--rounds", "1",
        "--loop-jobs", "1", "--loop-epochs", "1", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["jobs"] == 10 and figures["epochs"] == 2
    for key in ("ensemble_wall_s", "of_which_final_evaluation_s", "ratio_loop_over_ensemble"):
        assert figures[key] > 0, key
    assert 0 <= figures["mean_test_acc"] <= 1


@pytest.mark.parametrize("workload", ["convnet", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_soft_label_speed_runs_and_reports_the_teacher_share(tmp_path, workload):
    out = tmp_path / "soft.json"
    done = _run(
        "benchmarks/soft_label_speed.py", "--small", "--workload", workload, "--rounds", "1",
        "--warmup", "1", "--epochs", "1", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (figures,) = json.loads(out.read_text())
    assert figures["workload"] == workload and figures["jobs"] == 10
    assert 0 < figures["ensemble_teacher_share"] <= 1 and 0 < figures["loop_teacher_share"] <= 1
    # The lr grid of one set and seed shares its batches: the teacher labels each distinct batch once.
    assert figures["ensemble_teacher_batches_per_step"] == 2
    for key in ("ensemble_images_per_s", "loop_images_per_s", "ratio_loop_over_ensemble_training"):
        assert figures[key] > 0, key


def test_cpu_step_switches_every_route_and_reports_each_variant():
    done = _run("benchmarks/cpu_step.py", "--members", "4", "--repeat", "1", "--epochs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    reported = re.findall(r"^  (.+?)\s+[\d.]+ ms per step\s+before/this [\d.]+x$", done.stdout, re.MULTILINE)
    assert reported == [
        "none of the CPU routes (before)",
        "pooling as a matrix product only",
        "numpy hash only",
        "ReLU in place only",
        "DSA by member subsets only",
        "all but DSA by subsets",
        "all four (now)",
    ]
    refused = _run("benchmarks/cpu_step.py", "--members", "3")
    assert refused.returncode == 2 and "--members must be at least 4" in refused.stderr


def test_dsa_cpu_compares_both_routes_on_equal_outputs():
    done = _run("benchmarks/dsa_cpu.py", "--members", "3", "--repeat", "1", "--calls", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("(same output)") == 2 and "CIFAR" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["benchmarks/compare_outputs.py", "run", "--src", "no/such/src", "--out", "unused"],
        ["benchmarks/compare_speed.py", "--before", "no/such/src", "--after", "src", "--", "list", "models"],
    ],
)
def test_comparisons_refuse_a_tree_without_ddrank(args):
    """PYTHONPATH skips a missing folder, so a wrong path would compare the installed tree with itself."""
    done = _run(*args, timeout=60)
    assert done.returncode == 2
    assert "no/such/src holds no ddrank package" in done.stderr.strip().splitlines()[-1]

"""The demo on the embedded digits data: the reference baselines rank the way they must."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ddrank.cli import main
from ddrank.demo import DEMO_IPCS, DEMO_METHODS

SCORES = [
    f"{score}_{stat}"
    for score in ("acc_syn", "acc_random", "acc_real", "hlr", "ior", "lrs")
    for stat in ("mean", "std", "ci_low", "ci_high")
]
REQUIRED = [
    "method",
    "dataset",
    "ipc",
    "rounds",
    "protocol",
    "protocol_hash",
    "selection",
    "optimistic",
    "acc_real_source",
    *SCORES,
]


def run_demo(out: Path, *flags: str) -> list[dict[str, Any]]:
    html = out.with_suffix(".html")
    args = [
        "demo",
        *flags,
        "--device",
        "cpu",
        "--no-progress",
        "--no-store",
        "--json",
        str(out),
        "--html",
        str(html),
    ]
    assert main(args) == 0
    assert html.is_file() and "<table" in html.read_text()
    return json.loads(out.read_text())["evaluations"]


def section(rows: list[dict[str, Any]], labels: str) -> list[dict[str, Any]]:
    return [r for r in rows if (r["labels"] == "hard") == (labels == "hard")]


def check_soft_labels_shrink_the_gap(rows: list[dict[str, Any]]) -> None:
    """The paper's observation: with a teacher's labels, distilled sets lead random subsets by less."""
    hard, soft = section(rows, "hard"), section(rows, "soft")
    assert {r["protocol"] for r in soft} == {"digits-kd"}
    for ipc in DEMO_IPCS:

        def lead(rs, ipc=ipc):
            distilled = ("dm", "herding", "kcenter")
            return sum(r["ior_mean"] for r in rs if r["ipc"] == ipc and r["method"] in distilled)

        assert lead(soft) < lead(hard)
        # under soft labels the random subset itself is stronger
        random_hard = next(r for r in hard if r["ipc"] == ipc and r["method"] == "random")
        random_soft = next(r for r in soft if r["ipc"] == ipc and r["method"] == "random")
        assert random_soft["acc_random_mean"] > random_hard["acc_random_mean"]


def check_acceptance(rows: list[dict[str, Any]], rounds: int) -> None:
    rows = section(rows, "hard")
    assert {(r["method"], r["ipc"]) for r in rows} == {(m, i) for m in DEMO_METHODS for i in DEMO_IPCS}
    assert len(rows) == len(DEMO_METHODS) * len(DEMO_IPCS)
    for row in rows:
        missing = [name for name in REQUIRED if name not in row]
        assert not missing, (row["method"], row["ipc"], missing)
        assert (row["dataset"], row["protocol"], row["rounds"]) == ("digits", "digits", rounds)
        assert (row["selection"], row["optimistic"], row["acc_real_source"]) == ("honest", False, "trained")
        assert all(isinstance(row[name], float) for name in SCORES), row["method"]
        assert 0 <= row["lrs_mean"] <= 1 and row["lrs_ci_low"] <= row["lrs_mean"] <= row["lrs_ci_high"]
    # every set at one IPC is compared with the same random subsets and the same full-data runs
    for ipc in DEMO_IPCS:
        same_ipc = [r for r in rows if r["ipc"] == ipc]
        assert len({r["acc_random_mean"] for r in same_ipc}) == 1
        assert len({r["acc_real_mean"] for r in same_ipc}) == 1
    assert len({r["protocol_hash"] for r in rows}) == len(DEMO_IPCS)

    at10 = {r["method"]: r for r in rows if r["ipc"] == 10}
    noise, random = at10["noise"], at10["random"]
    assert noise["lrs_mean"] == min(r["lrs_mean"] for r in at10.values())
    assert noise["ior_mean"] < 0 and noise["ior_ci_high"] < 0
    assert random["ior_ci_low"] <= 0 <= random["ior_ci_high"]
    assert at10["dm"]["acc_syn_mean"] > random["acc_syn_mean"]
    assert at10["herding"]["acc_syn_mean"] > random["acc_syn_mean"]
    # noise stays near chance; the selection baselines and DM learn the digits
    assert noise["acc_syn_mean"] < 0.2
    assert all(at10[m]["acc_syn_mean"] > 0.85 for m in ("random", "herding", "kcenter", "dm"))


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory) -> list[dict[str, Any]]:
    return run_demo(tmp_path_factory.mktemp("demo") / "quick.json", "--quick")


def test_quick_demo_meets_the_acceptance_properties(quick_rows):
    check_acceptance(quick_rows, rounds=3)


def test_quick_demo_noise_is_last_at_every_ipc(quick_rows):
    for labels in ("hard", "soft"):
        for ipc in DEMO_IPCS:
            by_lrs = sorted(
                (r for r in section(quick_rows, labels) if r["ipc"] == ipc), key=lambda r: r["lrs_mean"]
            )
            assert by_lrs[0]["method"] == "noise"


def test_quick_demo_soft_labels_shrink_the_gap(quick_rows):
    check_soft_labels_shrink_the_gap(quick_rows)


@pytest.mark.slow
def test_full_demo_meets_the_acceptance_properties(tmp_path):
    rows = run_demo(tmp_path / "full.json")
    check_acceptance(rows, rounds=5)
    check_soft_labels_shrink_the_gap(rows)

"""The demo end to end with the ensemble backend and with the loop backend, in one process.

Each run starts from an empty cache directory (so each trains its own teacher and keeps no
results) and builds the same reference sets; the ratio is loop time over ensemble time.

    python benchmarks/demo_backends.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

from ddrank.demo import DemoSettings, run_demo
from ddrank.progress import Silent
from ddrank.settings import RunSettings


def timed_demo(backend: str, quick: bool) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DDRANK_CACHE_DIR"] = cache
        start = time.perf_counter()
        sections = run_demo(DemoSettings(quick=quick, run=RunSettings(backend=backend)), Silent())
        seconds = time.perf_counter() - start
    rows = [r.row() | {"labels": s} for s, results in sections.items() for r in results]
    return seconds, rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the timings and both runs' rows here")
    args = parser.parse_args()
    ensemble_s, ensemble_rows = timed_demo("ensemble", args.quick)
    print(f"ensemble backend: {ensemble_s:7.1f} s", flush=True)
    loop_s, loop_rows = timed_demo("loop", args.quick)
    print(f"loop backend:     {loop_s:7.1f} s")
    print(
        f"ratio loop / ensemble: {loop_s / ensemble_s:.2f}x "
        f"(torch {torch.__version__}, {os.cpu_count()} CPUs)"
    )
    worst = max(abs(a["lrs_mean"] - b["lrs_mean"]) for a, b in zip(ensemble_rows, loop_rows, strict=True))
    print(f"largest LRS difference between the backends: {100 * worst:.2f} points")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"ensemble_s": ensemble_s, "loop_s": loop_s, "ensemble": ensemble_rows, "loop": loop_rows}, fh
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

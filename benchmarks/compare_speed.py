"""Wall time of one ddrank command with two source trees, run alternately on the same machine.

    python benchmarks/compare_speed.py --before /tmp/before/src --after src --repeat 5 -- list models
    python benchmarks/compare_speed.py --before /tmp/before/src --after src --import-only

Each repetition runs the command once with ``PYTHONPATH`` set to each tree (before, then after), in a
fresh subprocess with its own empty cache, so that both meet the same machine load; the figures are
the medians and their ratio. ``--import-only`` times the start-up of a training command instead:
importing the modules ``ddrank evaluate`` imports before it reads any input.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTUP = "import ddrank.cli, ddrank.cli_commands, ddrank.evaluation.evaluator, ddrank.demo"


def source_tree(text: str) -> Path:
    """An argparse type: a folder holding the ddrank package. PYTHONPATH ignores a folder that does not
    exist, so a wrong path would silently run the installed tree and compare it with itself."""
    path = Path(text)
    if not (path / "ddrank" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text} holds no ddrank package (give a tree's src folder)")
    return path


def _once(src: Path, command: list[str]) -> float:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=str(src.resolve()), DDRANK_CACHE_DIR=cache)
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=source_tree, required=True, help="the baseline tree's src folder")
    parser.add_argument("--after", type=source_tree, required=True, help="the changed tree's src folder")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--import-only", action="store_true", help="time the start-up imports only")
    parser.add_argument("args", nargs="*", help="the ddrank command's arguments (after --)")
    args = parser.parse_args()
    if args.import_only == bool(args.args):
        parser.error("give either --import-only or a ddrank command after --")
    command = [sys.executable, "-c", STARTUP] if args.import_only else [sys.executable, "-m", "ddrank"]
    command += [] if args.import_only else args.args
    shown = "start-up imports" if args.import_only else "ddrank " + " ".join(args.args)
    times: dict[str, list[float]] = {"before": [], "after": []}
    for index in range(args.repeat):
        for name in times:
            times[name].append(_once(getattr(args, name), command))
        last = {name: f"{values[-1]:.2f} s" for name, values in times.items()}
        print(f"run {index + 1}: before {last['before']}, after {last['after']}", flush=True)
    before, after = (statistics.median(times[name]) for name in times)
    print(f"{shown}: median before {before:.2f} s, after {after:.2f} s, before/after {before / after:.2f}x")


if __name__ == "__main__":
    main()

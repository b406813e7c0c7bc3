"""What a user sees, before and after a change: run the same commands with two source trees and compare.

    python benchmarks/compare_outputs.py run --src /tmp/before-tree/src --out /tmp/before
    python benchmarks/compare_outputs.py run --src src --out /tmp/after
    python benchmarks/compare_outputs.py compare /tmp/before /tmp/after

``run`` executes, with ``PYTHONPATH`` set to ``--src`` and a fresh cache under ``--out``: the quick
demo (JSON, results store, HTML), the leaderboard of that store as JSON, CSV and Markdown (LRS and
accuracy) and HTML, a two-student cross-architecture evaluation (JSON), and an ARS evaluation
recorded in a second store with its leaderboard. ``compare`` requires byte-identical JSON, CSV and
Markdown up to the time the store recorded each evaluation (the leaderboards' ``recorded``); HTML equal
up to its generated-at time; and equal store rows except for the wall-clock columns (jobs:
``seconds``, ``created``; evaluations: ``created``). Paths inside the outputs (the
synthetic set's file, the cached teacher) name each run's own folder, so the folder's path is read
as ``<run>`` in both. It exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare_speed import source_tree  # noqa: E402

WALL_CLOCK = {"jobs": ("seconds", "created"), "evaluations": ("created",)}
_GENERATED = re.compile(r"Generated \S+ by ddrank")
# When the store recorded an evaluation (a leaderboard row's ``recorded``): the wall clock again.
_RECORDED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


def _ddrank(src: Path, out: Path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(src.resolve()), DDRANK_CACHE_DIR=str(out / "cache"))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ddrank", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    print(f"{time.perf_counter() - started:6.1f} s  ddrank {' '.join(args)}", flush=True)


def run(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store, ars_store = str(out / "store.sqlite"), str(out / "ars.sqlite")
    demo = ["--json", str(out / "demo.json"), "--store", store, "--html", str(out / "demo.html")]
    _ddrank(src, out, "demo", "--quick", *demo, "--no-progress")
    for metric in ("lrs", "acc"):
        for fmt in ("json", "csv", "md"):
            target = str(out / f"leaderboard-{metric}.{fmt}")
            _ddrank(
                src,
                out,
                "leaderboard",
                "--store",
                store,
                "--metric",
                metric,
                "--format",
                fmt,
                "--out",
                target,
            )
    _ddrank(
        src, out, "leaderboard", "--store", store, "--format", "html", "--out", str(out / "leaderboard.html")
    )
    herding = str(out / "herding1.pt")
    _ddrank(src, out, "baseline", "herding", "--ipc", "1", "--out", herding)
    students = ["--students", "ConvNet-2-W16,MLP", "--rounds", "2"]
    _ddrank(
        src,
        out,
        "evaluate",
        "--images",
        herding,
        *students,
        "--json",
        str(out / "students.json"),
        "--no-store",
    )
    ars = ["--metric", "ars", "--rounds", "2", "--method", "herding", "--store", ars_store]
    _ddrank(src, out, "evaluate", "--images", herding, *ars, "--json", str(out / "ars.json"), "--no-progress")
    for fmt in ("json", "md"):
        target = str(out / f"leaderboard-ars.{fmt}")
        _ddrank(
            src, out, "leaderboard", "--store", ars_store, "--metric", "ars", "--format", fmt, "--out", target
        )


def _text(path: Path) -> str:
    """A file's text with its run folder's path read as ``<run>``."""
    return path.read_text().replace(str(path.parent.resolve()), "<run>")


def _rows(path: Path, table: str) -> tuple[list[str], list[tuple]]:
    folder = str(path.parent.resolve())

    def value(v: object) -> object:
        return v.replace(folder, "<run>") if isinstance(v, str) else v

    with sqlite3.connect(path) as conn:
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
        names = [d[0] for d in cursor.description]
        keep = [i for i, name in enumerate(names) if name not in WALL_CLOCK.get(table, ())]
        return [names[i] for i in keep], [tuple(value(row[i]) for i in keep) for row in cursor.fetchall()]


def compare(before: Path, after: Path) -> list[str]:
    """Every difference between two ``run`` folders (empty when they match)."""
    problems = []
    for old in sorted(before.glob("*")):
        new = after / old.name
        if old.suffix not in (".json", ".csv", ".md", ".html", ".sqlite"):
            continue
        if not new.exists():
            problems.append(f"{old.name}: missing after")
        elif old.suffix == ".html":
            same = _GENERATED.sub("", _text(old)) == _GENERATED.sub("", _text(new))
            print(f"{old.name}: {'identical up to the generated-at time' if same else 'DIFFERENT'}")
            problems += [] if same else [f"{old.name} differs beyond its generated-at time"]
        elif old.suffix == ".sqlite":
            for table in ("meta", "jobs", "evaluations"):
                columns, rows = _rows(old, table)
                same = (columns, rows) == _rows(new, table)
                ignored = ", ".join(WALL_CLOCK.get(table, ())) or "nothing"
                verdict = "identical" if same else "DIFFERENT"
                print(f"{old.name} {table}: {len(rows)} rows {verdict} (ignoring {ignored})")
                problems += [] if same else [f"{old.name}: table {table} differs"]
        else:
            same = _RECORDED.sub("<time>", _text(old)) == _RECORDED.sub("<time>", _text(new))
            print(f"{old.name}: {'identical up to recorded times' if same else 'DIFFERENT'}")
            problems += [] if same else [f"{old.name} differs"]
    for name in ("demo.json", "students.json"):
        if (before / name).exists():
            payload = json.loads((before / name).read_text())
            print(f"{name}: {len(payload)} {'rows' if isinstance(payload, list) else 'keys'}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run the commands with one source tree")
    r.add_argument("--src", type=source_tree, required=True, help="a tree's src folder (holding ddrank/)")
    r.add_argument("--out", type=Path, required=True, help="folder for the outputs (and a fresh cache)")
    c = sub.add_parser("compare", help="compare two run folders")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.action == "run":
        run(args.src, args.out)
        return 0
    problems = compare(args.before, args.after)
    for problem in problems:
        print("DIFFERENT:", problem)
    print("no difference" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

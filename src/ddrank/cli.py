"""The ``ddrank`` command: argument parsing; each command's work is in :mod:`ddrank.cli_commands`.

Flags shared by several commands are declared once, in parent parsers: what an evaluation computes
(dataset, protocol, metric, ...), how students train (seed, backend, device, ...) and where results
go (store, JSON, progress).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ddrank import __version__
from ddrank.errors import DDRankError, one_line, shown

if TYPE_CHECKING:
    from rich.console import Console

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
PREFIX = "ddrank: error: "


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it stops like Ctrl-C: cleanly, finished jobs kept."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit 2), like every other ddrank error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PREFIX}{' '.join(message.split())}; see {self.prog} --help\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse's, except that unknown arguments are reported by the (sub)command's own parser, so
        that the hint names its --help (``ddrank evaluate --help``, not ``ddrank --help``)."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            _command_parser(self, parsed).error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed


def count(text: str) -> int:
    """An argparse type for counts (rounds, IPC, ensemble members, ...): a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


def label_mode(text: str) -> str:
    """An argparse type for a label mode: hard, S or M (any case)."""
    mode = {"hard": "hard", "s": "S", "m": "M"}.get(text.strip().lower())
    if mode is None:
        raise argparse.ArgumentTypeError(
            f"must be hard, S (stored soft labels) or M (teacher relabelling); got {text!r}"
        )
    return mode


def size(text: str) -> int:
    """An argparse type for a number of bytes: 500000, 64MB, 2GiB (see ddrank.data.files.parse_size)."""
    from ddrank.data.files import parse_size

    try:
        return parse_size(text)
    except DDRankError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Choices spelled out here so that building the parser imports no training code (tests check that they
# equal METRIC_NAMES of ddrank.metrics.definitions, BACKENDS of ddrank.engine.runner, PRECISIONS of
# ddrank.settings and MIN_BOOTSTRAP_ROUNDS of ddrank.metrics.stats).
METRIC_NAMES = ("lrs", "ars", "acc")
MIN_BOOTSTRAP_ROUNDS = 8
BACKENDS = ("auto", "ensemble", "loop")
PRECISIONS = ("auto", "fp32", "bf16")
LISTINGS = ("models", "datasets", "protocols", "losses", "formats", "baselines")


class _Commands:
    """``cli_commands.cmd_x`` looked up when a command runs, not when the parser is built (that import
    brings in torch)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def run(args: argparse.Namespace, console: Console) -> int:
            from ddrank import cli_commands

            return getattr(cli_commands, name)(args, console)

        run.__name__ = name
        return run


cli_commands = _Commands()
STORE_HELP = "results database (default: results.sqlite in the ddrank cache directory)"
METRIC_HELP = "lrs (default), ars, or plain accuracy (acc)"
FIDELITY_CHOICES = ("reference", "honest")
FIDELITY_HELP = (
    "reference: the source's published protocol (DD-Ranking's for --config, the default there); "
    "honest: ddrank's corrected protocol (the default for presets)"
)


def _data_flags(p: argparse.ArgumentParser) -> None:
    """Where the real dataset is, and whether to fetch it."""
    p.add_argument(
        "--data-root", help="folder holding the real dataset (default: data/ in the ddrank cache directory)"
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch a missing dataset into --data-root (checksum-verified, resumable; not ImageNet)",
    )


def _calibration_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="table of published baselines to compare with (default: the packaged one, see ddrank calibrate)",
    )


def _evaluation_flags() -> argparse.ArgumentParser:
    """What one evaluation computes: dataset, protocol, metric, rounds, acc(real, hard), teachers."""
    p = Parser(add_help=False)
    p.add_argument("--dataset", help="real dataset (ddrank list datasets); default digits")
    _data_flags(p)
    p.add_argument(
        "--protocol", help="protocol preset or YAML file (ddrank list protocols); default: the dataset's"
    )
    p.add_argument("--ipc", type=count, help="images per class (checked against the set)")
    p.add_argument(
        "--labels",
        help="labels file (.pt/.npy): [N] hard or [N, K] soft; replaces labels stored with the set (said "
        "on stderr); default: the set's own, else class-major order",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow .pt files that need full unpickling (can run code: trusted files only)",
    )
    p.add_argument(
        "--method",
        help="name shown for this set in tables and JSON (default: the file or folder name of --images)",
    )
    p.add_argument("--metric", choices=METRIC_NAMES, help=METRIC_HELP)
    p.add_argument("--rounds", type=count, help="evaluation rounds (default: the protocol's)")
    p.add_argument(
        "--real-acc",
        help="use this acc(real, hard) (a fraction) or 'published' instead of training it "
        "(planning: 'published' skips full-data jobs that have a published value)",
    )
    p.add_argument("--weight", type=float, help="LRS weight w (IOR against HLR) or ARS γ; default 0.5")
    p.add_argument("--teacher-dir", help="folder of teachers laid out as DIR/<dataset>/<model>/ckpt_best.pt")
    p.add_argument("--config", help="a DD-Ranking YAML configuration (translated into a protocol)")
    p.add_argument("--fidelity", choices=FIDELITY_CHOICES, help=FIDELITY_HELP)
    p.add_argument(
        "--students", help="comma-separated student models: one evaluation each (a cross-architecture matrix)"
    )
    return p


def _engine_flags() -> argparse.ArgumentParser:
    """How students train: seed, backend, device, precision and ensemble limits."""
    p = Parser(add_help=False)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="base seed (default 0); round r uses a seed derived from (seed, r)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="ensemble trains many students at once; loop trains one at a time (default: auto)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 autocast on CUDA, except fp32 for reference protocols (as published) and on CPUs",
    )
    p.add_argument("--max-members", type=count, help="most students trained at once in one ensemble")
    p.add_argument(
        "--data-parallel-images",
        type=count,
        help="under torchrun, a job on at least this many images trains on every rank (default 500000)",
    )
    return p


def _output_flags() -> argparse.ArgumentParser:
    """Where results go: the results store, a JSON file, and the progress bar."""
    p = Parser(add_help=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--store", help=STORE_HELP + "; finished jobs are reused, so a rerun resumes")
    where.add_argument("--no-store", action="store_true", help="keep results in memory only")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _group_flags() -> argparse.ArgumentParser:
    """Which recorded evaluations a command considers: the fields of a leaderboard group."""
    p = Parser(add_help=False)
    p.add_argument("--dataset", type=str.lower, help="only this dataset (in any case: CIFAR10 is cifar10)")
    p.add_argument("--ipc", type=count, help="only this IPC")
    p.add_argument("--protocol", help="only this protocol (its name, or the first 4+ characters of its hash)")
    p.add_argument("--student", help="only this student model")
    p.add_argument(
        "--labels",
        type=label_mode,
        metavar="{hard,S,M}",
        help="only this label mode: hard, S (soft labels stored with the set) or M (teachers relabel every "
        "batch)",
    )
    p.add_argument("--fidelity", choices=("honest", "reference"), help="only this fidelity")
    p.add_argument("--weight", type=float, help="only scores computed with this weight (w of LRS, γ of ARS)")
    p.add_argument(
        "--acc-real",
        choices=("trained", "given", "published"),
        help="only scores whose acc(real, hard) was trained, given (evaluate --real-acc) or published",
    )
    p.add_argument(
        "--smoke",
        action=argparse.BooleanOptionalAction,
        help="only smoke runs (evaluate --quick or --epochs); --no-smoke: only full runs",
    )
    return p


VERBOSE_HELP = "print each deviation from the source protocol with its reason (default: one short line each)"


def build_parser() -> argparse.ArgumentParser:
    from ddrank.data.files import DEFAULT_MAX_BYTES, human_bytes

    default_input = human_bytes(DEFAULT_MAX_BYTES)
    parser = Parser(
        prog="ddrank",
        description="Fair, fast, reproducible evaluation of dataset distillation (HLR, IOR, LRS, ARS).",
        epilog="Accuracies and scores are fractions in [0, 1]; tables show them as percentages.",
    )
    parser.add_argument("--version", action="version", version=f"ddrank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    evaluation, engine, output = _evaluation_flags(), _engine_flags(), _output_flags()

    ev = sub.add_parser(
        "evaluate",
        parents=[evaluation, engine, output],
        help="score a synthetic set: LRS (HLR, IOR), ARS or accuracy, with 95%% CIs",
        description="Score a synthetic set against random real subsets under one protocol.",
        epilog="example: ddrank evaluate --images herding.pt --dataset digits --rounds 5 --json herding.json",
    )
    ev.add_argument(
        "--images",
        help="synthetic set: .pt tensor or dict, DATM/MTT folder, DC result file, .npz, image folder "
        "(required unless --dry-run)",
    )
    ev.add_argument(
        "--dry-run",
        action="store_true",
        help="check --images as the run would, then print the resolved protocol, its deviations and the "
        "job plan without data or training (--json writes them)",
    )
    ev.add_argument(
        "--format", default="auto", help="format of --images (ddrank list formats); default: detected"
    )
    ev.add_argument("--lr", type=float, help="the set's own learning rate (overrides one shipped with it)")
    ev.add_argument(
        "--space",
        choices=("pixel", "normalized", "zca"),
        help="what the image values are (default: the protocol's convention)",
    )
    ev.add_argument("--resize", action="store_true", help="resize images to the dataset's resolution")
    smoke = ev.add_mutually_exclusive_group()
    smoke.add_argument(
        "--epochs",
        type=count,
        help="smoke run: train every student, the whole-data one included, this many epochs (labelled smoke, "
        "never ranked with full runs)",
    )
    smoke.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: a tenth of the epochs of every student, the whole-data one included, and 2 rounds "
        "(labelled smoke, never ranked with full runs)",
    )
    ev.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (values that contradict their space, labels the protocol ignores) as errors",
    )
    ev.add_argument(
        "--max-input-size",
        type=size,
        metavar="BYTES",
        help=f"largest synthetic-set file or decoded array accepted, e.g. 4GiB (default {default_input})",
    )
    ev.add_argument(
        "--teacher",
        action="append",
        metavar="PATH",
        help="teacher checkpoint, once per teacher of the protocol, in its order",
    )
    ev.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    _calibration_flag(ev)
    ev.set_defaults(run=cli_commands.cmd_evaluate)

    cal = sub.add_parser(
        "calibrate",
        parents=[engine, output],
        help="train the random-subset and whole-data baselines and compare them with published values",
        description="Train the class-balanced random-subset baselines at each IPC and the whole-dataset "
        "baseline under a protocol, and print each beside its published value (mean ± std, source) "
        "with a z-score; more than 3 published std away is flagged. The jobs are stored, so a later "
        "ddrank evaluate under the same protocol trains neither again.",
        epilog="example: ddrank calibrate --dataset cifar10 --download --ipc 1,10 --json calibration.json",
    )
    cal.add_argument(
        "--dataset", default="digits", help="real dataset (ddrank list datasets); default digits"
    )
    _data_flags(cal)
    cal.add_argument(
        "--protocol", help="protocol preset or YAML file (ddrank list protocols); default: the dataset's"
    )
    cal.add_argument("--ipc", default="1,10,50", help="comma-separated IPCs of the random subsets (1,10,50)")
    cal.add_argument("--rounds", type=count, help="rounds per baseline (default: the protocol's)")
    _calibration_flag(cal)
    cal.set_defaults(run=cli_commands.cmd_calibrate)

    demo = sub.add_parser(
        "demo",
        parents=[engine, output],
        help="score the reference baselines on the embedded digits data",
        description="Build noise/random/herding/k-center/DM sets on digits at IPC 1 and 10, score each "
        "with LRS over several rounds under hard labels and under a teacher's soft labels, print ranked "
        "tables and write an HTML leaderboard.",
        epilog="example: ddrank demo --quick --html demo.html",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="fewer epochs, rounds and learning rates, and a shorter DM distillation",
    )
    demo.add_argument("--hard-only", action="store_true", help="skip the soft-label (teacher) section")
    demo.add_argument("--html", default="ddrank-demo.html", help="where to write the HTML leaderboard")
    demo.set_defaults(run=cli_commands.cmd_demo)

    ls = sub.add_parser(
        "list",
        help="list registered models, datasets, protocols, losses, formats or baselines",
        description="List what ddrank knows by name, optionally only the names matching a shell pattern.",
        epilog="examples: ddrank list protocols; ddrank list models 'ResNet*'",
    )
    ls.add_argument("kind", choices=LISTINGS, help="what to list")
    ls.add_argument("pattern", nargs="?", help="only names matching this shell pattern (case-insensitive)")
    ls.add_argument("--long", action="store_true", help="protocols: each preset's whole description")
    ls.set_defaults(run=cli_commands.cmd_list)

    proto = sub.add_parser(
        "protocol",
        help="inspect protocol presets",
        description="Inspect protocols: ddrank protocol show NAME prints a preset or protocol YAML resolved "
        "for a dataset and IPC, with its content hash.",
    )
    proto_sub = proto.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = proto_sub.add_parser(
        "show",
        help="print a resolved protocol and its content hash",
        epilog="example: ddrank protocol show dsa --dataset cifar10 --ipc 10",
    )
    show.add_argument("name", help="a preset (ddrank list protocols) or a protocol YAML file")
    show.add_argument("--dataset", help="resolve the preset for this dataset (default: the first it covers)")
    show.add_argument(
        "--ipc", type=count, help="resolve the preset for this IPC (default: settings shared by every IPC)"
    )
    show.add_argument("--fidelity", choices=FIDELITY_CHOICES, help=FIDELITY_HELP)
    show.set_defaults(run=cli_commands.cmd_protocol_show)

    base = sub.add_parser(
        "baseline",
        help="write a reference synthetic set (noise, random, herding, kcenter, dm)",
        description="Build a reference synthetic set from the real training set (random noise, a random "
        "real subset, herding, k-center or distribution matching) and write it as a .pt or .npz file that "
        "ddrank evaluate --images reads.",
        epilog="example: ddrank baseline herding --dataset digits --ipc 10 --out herding.pt",
    )
    base.add_argument("method", help="the baseline (ddrank list baselines)")
    base.add_argument("--dataset", default="digits", help="real dataset to select from (default digits)")
    _data_flags(base)
    base.add_argument("--ipc", type=count, required=True, help="images per class")
    base.add_argument("--seed", type=int, default=0, help="seed of the selection (default 0)")
    base.add_argument(
        "--out",
        required=True,
        help="output file: .pt (a dict of images and labels) or .npz (the same arrays)",
    )
    base.add_argument("--no-progress", action="store_true", help="no progress bar")
    base.set_defaults(run=cli_commands.cmd_baseline)

    plan = sub.add_parser(
        "plan",
        parents=[evaluation, engine],
        help="show how a run's jobs would split over W ranks and how long it would take, without training",
        description="Plan an evaluation (like ddrank evaluate) or a sweep (--sweep leaderboard|FILE.yaml): "
        "group its jobs into units, time each kind of unit for a few steps on this device, and print the "
        "split over each world size with the estimated wall time.",
        epilog="example: ddrank plan --dataset cifar10 --ipc 10 --world-size 1,8",
    )
    plan.add_argument("--world-size", default="1", help="comma-separated world sizes, e.g. 1,8,64")
    plan.add_argument(
        "--sweep", help="'leaderboard' (every published protocol × dataset × IPC) or a sweep YAML"
    )
    plan.add_argument("--images", help="the synthetic set (default: a stand-in of the IPC's size)")
    plan.add_argument(
        "--store", help=STORE_HELP + "; jobs already there are counted and left out of the plan"
    )
    plan.set_defaults(run=cli_commands.cmd_plan)

    sweep = sub.add_parser(
        "sweep",
        parents=[engine, output],
        help="run every evaluation of a sweep file (distributed under torchrun)",
        epilog="example: torchrun --nproc_per_node 8 -m ddrank sweep sweep.yaml --json sweep.json",
    )
    sweep.add_argument("file", help="YAML list of entries: method, dataset, ipc, images[, labels, protocol]")
    sweep.add_argument("--data-root", help="folder holding the real datasets")
    sweep.add_argument("--metric", choices=METRIC_NAMES, help=METRIC_HELP)
    sweep.add_argument("--rounds", type=count, help="evaluation rounds (default: each protocol's)")
    sweep.add_argument("--fidelity", choices=FIDELITY_CHOICES, help=FIDELITY_HELP)
    sweep.add_argument(
        "--teacher-dir", help="folder of teachers laid out as DIR/<dataset>/<model>/ckpt_best.pt"
    )
    sweep.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sweep.set_defaults(run=cli_commands.cmd_sweep)

    teacher = sub.add_parser(
        "teacher",
        help="train teacher checkpoints for soft-label protocols",
        description="Teachers for soft-label protocols: ddrank teacher train writes a checkpoint trained on "
        "the whole real training set, laid out as DIR/<dataset>/<model>/ckpt_best.pt for --teacher-dir.",
    )
    teacher_sub = teacher.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = teacher_sub.add_parser(
        "train",
        help="train a teacher on the real training set with the full-data recipe",
        description="Train MODEL on the whole training set of DATASET with the full-data recipe of the "
        "dataset's protocol (or --protocol) and write a checkpoint with its test accuracy.",
        epilog="example: ddrank teacher train --dataset digits --model ConvNet-2-W16 "
        "--out teachers/digits/ConvNet-2-W16/ckpt_best.pt",
    )
    train.add_argument("--dataset", required=True, help="real dataset (ddrank list datasets)")
    _data_flags(train)
    train.add_argument("--model", required=True, help="teacher architecture (ddrank list models)")
    train.add_argument("--protocol", help="take the full-data recipe from this preset")
    train.add_argument("--epochs", type=count, help="override the recipe's epochs")
    train.add_argument("--lr", type=float, help="override the recipe's learning rate")
    train.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    train.add_argument(
        "--out", required=True, help="checkpoint path, e.g. DIR/<dataset>/<model>/ckpt_best.pt"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=cli_commands.cmd_teacher_train)

    board = sub.add_parser(
        "leaderboard",
        parents=[_group_flags()],
        help="rank recorded methods per group (dataset, IPC, protocol, fidelity, labels, student, weight, "
        "acc(real) source, smoke run), with CIs",
        description="Rank the recorded evaluations within each group: dataset, IPC, protocol and its hash, "
        "fidelity, labels, student, the weight of the score (w of LRS, γ of ARS) and where acc(real, hard) "
        "came from (trained, or given and published values, which are shown), and whether it is a smoke "
        "run; methods are never ranked across groups. The newest evaluation of each method is ranked; --all "
        "adds the earlier ones. Renders a terminal table, Markdown, CSV, JSON, LaTeX or a self-contained "
        "HTML page.",
        epilog="example: ddrank leaderboard --dataset digits --ipc 10 --labels hard --format md",
    )
    board.add_argument("--store", help=STORE_HELP)
    board.add_argument("--metric", choices=METRIC_NAMES, default="lrs", help="ranking score (default lrs)")
    board.add_argument(
        "--format",
        choices=("table", "md", "paper-md", "csv", "json", "latex", "html"),
        default="table",
        help="table (terminal), md (every column), paper-md (mean ± std), csv, json (versioned schema), "
        "latex (booktabs, mean ± std), html (self-contained page)",
    )
    board.add_argument(
        "--out", help="write to this file (default: stdout; html writes leaderboard.html in the cwd)"
    )
    board.add_argument(
        "--all", action="store_true", help="also list earlier evaluations of each method (the history)"
    )
    board.add_argument(
        "--wide",
        action="store_true",
        help="every column in the terminal table (the bootstrap CI only from "
        f"{MIN_BOOTSTRAP_ROUNDS} rounds on: with fewer a 95%% bootstrap interval covers much less than 95%%)",
    )
    board.set_defaults(run=cli_commands.cmd_leaderboard)

    compare = sub.add_parser(
        "compare",
        parents=[_group_flags()],
        help="paired comparison of two methods over their rounds with the same seeds",
        description="Mean difference A − B of a score over the rounds both methods ran with the same seed, "
        "with its 95% CI and the p-value of a paired t-test, within one group (dataset, IPC, protocol, "
        "fidelity, labels, student, weight, acc(real) source, smoke run); when the methods share several "
        "groups, the filters choose one. Rounds that only one method ran are left out, and listed.",
        epilog="example: ddrank compare dm herding --dataset digits --ipc 10 --labels hard",
    )
    compare.add_argument("a", help="first method")
    compare.add_argument("b", help="second method")
    compare.add_argument("--store", help=STORE_HELP)
    compare.add_argument("--metric", choices=METRIC_NAMES, default="lrs", help="score (default lrs)")
    compare.set_defaults(run=cli_commands.cmd_compare)

    rm = sub.add_parser(
        "rm",
        parents=[_group_flags()],
        help="remove recorded evaluations (by id, or every one matching the filters)",
        description="Remove evaluations from the results store: by id (the id column of ddrank leaderboard "
        "--all --wide, or evaluation_id in --format csv), or every evaluation matching --method, --metric "
        "and the group filters. Asks before removing unless --yes; answering no removes nothing (exit 0). "
        "Trained jobs stay cached (later runs reuse them).",
        epilog="examples: ddrank rm 12 15 --yes; ddrank rm --method herding --metric lrs --dataset digits "
        "--ipc 10",
    )
    rm.add_argument("ids", nargs="*", type=int, help="evaluation ids to remove")
    rm.add_argument("--method", help="remove the evaluations of this method (with the other filters)")
    rm.add_argument(
        "--metric", choices=METRIC_NAMES, help="remove only evaluations of this metric (default: any)"
    )
    rm.add_argument("--store", help=STORE_HELP)
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(run=cli_commands.cmd_rm)

    export = sub.add_parser(
        "export",
        help="write every stored job and evaluation to a checksummed JSON file",
        description="Write every job and evaluation of the results store to one JSON file with a sha256 "
        "checksum (the store is opened read-only); ddrank import adds such a file to another store.",
        epilog="example: ddrank export --out results-export.json",
    )
    export.add_argument("--out", required=True, help="export file (JSON)")
    export.add_argument("--store", help=STORE_HELP)
    export.set_defaults(run=cli_commands.cmd_export)

    imp = sub.add_parser(
        "import",
        help="add the jobs and evaluations of an export file to the store",
        description="Add the jobs and evaluations of a file written by ddrank export to the results store, "
        "skipping those already there. The whole file is checked (format, schema, checksum) before the "
        "store is created or changed.",
        epilog="example: ddrank import results-export.json --store merged.sqlite",
    )
    imp.add_argument("file", help="export file written by ddrank export")
    imp.add_argument("--store", help=STORE_HELP)
    imp.set_defaults(run=cli_commands.cmd_import)
    return parser


def _stop_exception(signum: int) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _in_import(frame: Any) -> bool:
    """Whether ``frame`` runs inside an import (a module's top-level code or the import machinery)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


# How soon a signal that arrived during an import is raised again, once the import is over.
_RETRY_S = 0.02


def _signal_handlers(received: list[int]) -> dict[int, Any]:
    """SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt (unless ignored), each noting its
    number in ``received`` first; the previous handlers are returned. Only the main thread can set
    handlers: elsewhere nothing changes.

    A signal that lands inside an import is not raised there: a library's import can swallow the
    exception (C code that clears errors) or abort the process (an exception thrown through C++). It is
    raised instead at the first moment after the import, checked every ``_RETRY_S`` seconds by a timer.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {
        signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)
    }

    def stop(signum: int, frame: Any) -> None:
        if signum != signal.SIGALRM:
            received.append(signum)
        elif not received:  # not this module's retry
            return
        if _in_import(frame):
            signal.setitimer(signal.ITIMER_REAL, _RETRY_S)
            return
        raise _stop_exception(received[0])

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    if previous[signal.SIGINT] in (signal.SIG_DFL, signal.default_int_handler):
        signal.signal(signal.SIGINT, stop)
    return previous


def _stopped(terminated: bool, args: argparse.Namespace | None) -> int:
    """Report an interruption in one line; its exit code."""
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    kept = (
        "; every job finished before is kept in the results store: rerun the command to resume"
        if _records_jobs(args)
        else ""
    )
    print(f"ddrank: {what}{kept}", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _hold_signals(handlers: dict[int, Any]) -> None:
    """Ignore further Ctrl-C and SIGTERM, and a pending retry, while the process reports and cleans up."""
    if handlers:
        signal.setitimer(signal.ITIMER_REAL, 0)
    for signum in handlers:
        signal.signal(signum, signal.SIG_IGN)


def _restore(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def internal_error_log(exc: BaseException, argv: Sequence[str] | None) -> Path:
    """Write ``exc``'s traceback, with the command and versions, to a log file in the cache; its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = (
        f"ddrank {__version__}, Python {sys.version.split()[0]}, pid {os.getpid()}\n"
        f"command: ddrank {' '.join(map(str, sys.argv[1:] if argv is None else argv))}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    folders: list[Callable[[], Path]] = []
    try:
        from ddrank.paths import cache_dir

        folders.append(lambda: cache_dir("logs"))
    except Exception:  # noqa: BLE001 - a broken install still gets its log
        pass
    import tempfile

    folders.append(lambda: Path(tempfile.gettempdir()))
    for folder in folders:
        try:
            path = folder() / f"internal-error-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except Exception:  # noqa: BLE001 - an unusable cache directory: try the next folder
            continue
    raise OSError("no writable folder for the log")


def _records_jobs(args: argparse.Namespace | None) -> bool:
    return args is not None and args.command in ("evaluate", "demo", "sweep") and not args.no_store


def _console_class() -> type[Console]:
    """rich's Console, except that a closed stdout (``ddrank ... | head``) raises BrokenPipeError, which
    :func:`main` ends with exit 0 as for any other output, instead of rich's silent exit 1."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return PipeConsole


def _closed_stdout() -> int:
    """A reader closed stdout (``| head``): what is left to print goes nowhere, and the command succeeds."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` ran: ``ddrank evaluate``, ``ddrank teacher train``, ..."""
    for name in ("command", "action"):
        chosen = getattr(args, name, None)
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if chosen is None or not subparsers or chosen not in subparsers[0].choices:
            break
        parser = subparsers[0].choices[chosen]
    return parser


def _run(argv: Sequence[str] | None, state: dict[str, Any]) -> int:
    """Parse ``argv`` and run its command (``state`` collects the arguments and the error prefix)."""
    Console = _console_class()  # noqa: N806 - the class, as `from rich.console import Console` would name it

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    from ddrank import distributed  # after parsing: --help and --version import no torch

    state["distributed"] = distributed
    state["args"] = args
    # Tables and layouts fit the terminal, else COLUMNS, else 80 columns (rich's own rule); plain messages
    # and log lines are never hard-wrapped when piped (see cli_commands._print): one line per message.
    console = Console()
    world = distributed.init_from_env(getattr(args, "device", None))
    if world.distributed:
        state["prefix"] = f"ddrank (rank {world.rank}): error: "
        if getattr(args, "device", "unset") is None:
            args.device = distributed.default_device()
        if not world.main:  # one rank speaks and writes files
            console = Console(file=io.StringIO())
            for name in ("json", "html"):
                if hasattr(args, name):
                    setattr(args, name, None)
            if hasattr(args, "no_progress"):
                args.no_progress = True
    return args.run(args, console)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ddrank`` command. Exit codes: 0 done; 2 bad input (one line on stderr, nothing trained
    where the input is known up front); 1 an internal error (one line naming its log file); 130
    Ctrl-C and 143 SIGTERM (one line; every job finished before is kept in the results store)."""
    received: list[int] = []
    handlers = _signal_handlers(received)
    state: dict[str, Any] = {"prefix": PREFIX, "args": None, "received": received}
    try:
        code = _run(argv, state)
        if received:  # a signal whose exception a library swallowed: it still ends the command
            raise _stop_exception(received[0])
        return code
    except DDRankError as exc:
        _hold_signals(handlers)
        print(state["prefix"] + shown(" ".join(str(exc).split())), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        _hold_signals(handlers)
        return _stopped(isinstance(exc, Terminated), state["args"])
    except BrokenPipeError:
        _hold_signals(handlers)
        return _closed_stdout()
    except Exception as exc:  # noqa: BLE001 - reported as what it is: ddrank's fault, not the input's
        _hold_signals(handlers)
        if received:  # a signal that interrupted an import or a library surfaces as another error
            return _stopped(received[0] == signal.SIGTERM, state["args"])
        try:
            where = f"details in {shown(internal_error_log(exc, argv))}"
        except Exception:  # noqa: BLE001
            where = "no log could be written"
        print(
            f"ddrank: internal error: {type(exc).__name__}: {one_line(exc)} ({where}); please report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        _hold_signals(handlers)
        distributed = state.get("distributed")
        if distributed is not None:
            with contextlib.suppress(Exception):  # the outcome is already decided and reported
                distributed.shutdown()
        _restore(handlers)


if __name__ == "__main__":
    sys.exit(main())

"""What each ``ddrank`` command does with its parsed arguments: translate them into run settings, call
the public API, and print. No evaluation logic lives here."""

from __future__ import annotations

import argparse
import errno
import fnmatch
import inspect
import json
import os
import re
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ddrank.calibration import calibration_warnings
from ddrank.errors import InputError, one_line, shown
from ddrank.evaluation import Evaluation
from ddrank.names import check_name, default_method
from ddrank.protocols import Deviation
from ddrank.report.payload import evaluations_document
from ddrank.settings import RunSettings, SettingError
from ddrank.store import ResultStore, StoreError


def method_name(args: argparse.Namespace) -> str:
    """The method an evaluation is recorded as: --method (an empty one is refused), else the set's file
    name, else "synthetic"."""
    named = args.method if args.method is not None else default_method(args.images) if args.images else None
    return check_name("method name", "synthetic" if named is None else named)


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (a symlink, a hard link or another spelling included)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):
        return False


def _store_location(path: str | os.PathLike[str] | None) -> Path:
    """The results store file at ``path``, else the cache's."""
    from ddrank.paths import cache_dir

    return Path(path) if path else cache_dir() / "results.sqlite"


def store_path(args: argparse.Namespace) -> Path | None:
    """The results store a command reads or writes (--store, else the cache's); None with --no-store."""
    return None if getattr(args, "no_store", False) else _store_location(getattr(args, "store", None))


def check_output(
    path: str | None, flag: str, *, store: str | os.PathLike[str] | None = None, **inputs: Any
) -> None:
    """Refuse an output path that cannot be written (a folder, a folder that is a file, no permission),
    or that is the results ``store`` or one of the command's ``inputs`` (flag name: path or paths; the
    flag is written ``--name-with-dashes``; a name that is no identifier, such as "the sweep's input", is
    written as it is), before anything trains."""
    if path is None:
        return
    target = Path(path)
    where = f"{flag} {shown(path)}"
    if store is not None and _same_file(target, store):
        spelled = "" if os.fspath(store) == os.fspath(path) else f" ({shown(store)})"
        raise InputError(
            f"{where} is the results store{spelled}; writing it would destroy the store; give another path"
        )
    for name, given in inputs.items():
        option = "--" + name.replace("_", "-") if name.isidentifier() else name  # else a description
        for other in given if isinstance(given, list | tuple) else [given]:
            if other is not None and _same_file(target, other):
                raise InputError(
                    f"{where} is the same file as {option} {shown(other)}; writing it would destroy that "
                    "input; give another path"
                )
    if target.is_dir():
        raise InputError(f"{where} is a folder; give a file path")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{where}: {shown(parent)} is a file, not a folder; give a path in a folder")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"{where} is not writable; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{where}: folder {shown(parent)} is not writable; give a path in a writable folder")
    try:  # what access() cannot tell: read-only or virtual file systems (/proc), and root's permissions
        handle, probe = tempfile.mkstemp(prefix=".ddrank-probe-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(
            f"{where}: cannot create files in folder {shown(parent)} ({exc.strerror or one_line(exc)}); "
            "give a path in a writable folder"
        ) from None


def _write_json(path: str, payload: Any, flag: str = "--json", *, stored: bool = True) -> None:
    """Write ``payload`` to ``path``; a failure says whether the results were ``stored`` in the store."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        full = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
        raise InputError(
            f"cannot write {flag} {shown(path)}{full}: {exc.strerror or one_line(exc)}"
            + (
                "; the results are in the results store (ddrank export writes them out)"
                if stored
                else "; nothing was stored (--no-store or --dry-run): rerun with a writable path"
            )
        ) from exc


def warn(line: str) -> None:
    """One warning line on stderr."""
    print(f"ddrank: warning: {shown(' '.join(line.split()))}", file=sys.stderr)


def _print(console: Console, line: str) -> None:
    """One message as typed: word-wrapped on a terminal, one unbroken line in a pipe or log file."""
    console.print(line, highlight=False, markup=False, soft_wrap=not console.is_terminal)


def _show(console: Console, renderable: Any) -> None:
    """A table on the terminal, or as plain text without padding when piped (COLUMNS wide, default 80)."""
    if console.is_terminal:
        console.print(renderable)
        return
    from ddrank.report.render import plain_text

    console.file.write(plain_text(renderable, width=max(console.width, 40)))  # COLUMNS, else 80
    console.file.flush()


# -- arguments → settings -------------------------------------------------------------------------

_FLAGS = {"teachers": "--teacher", "options": "--max-members / --data-parallel-images"}


def settings_of(**fields: Any) -> RunSettings:
    """RunSettings from command-line values (None: not given); a bad value is reported by its flag."""
    try:
        return RunSettings(**{name: value for name, value in fields.items() if value is not None})
    except SettingError as exc:
        raise exc.renamed(_FLAGS.get(exc.setting, "--" + exc.setting.replace("_", "-"))) from None


def engine_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of how students train: seed, backend, device, precision and engine options."""
    from ddrank.engine.options import EngineOptions

    options = {"max_members": getattr(args, "max_members", None)}
    if getattr(args, "data_parallel_images", None) is not None:
        options["data_parallel_images"] = args.data_parallel_images
    return {
        "seed": args.seed,
        "backend": args.backend,
        "device": args.device,
        "precision": args.precision,
        "options": EngineOptions(**options),
    }


def run_settings(args: argparse.Namespace) -> list[RunSettings]:
    """The settings of an evaluate or plan command: a DD-Ranking --config under the flags (explicit
    flags win), one settings per --students model."""
    fields = {
        "dataset": args.dataset,
        "data_root": args.data_root,
        "protocol": args.protocol,
        "ipc": args.ipc,
        "metric": args.metric,
        "rounds": args.rounds,
        "teacher_dir": args.teacher_dir,
        "teachers": getattr(args, "teacher", None),
        "weight": args.weight,
        "real_acc": args.real_acc,
        "download": args.download or None,
        "calibration": getattr(args, "calibration", None),
        "fidelity": args.fidelity,
        **engine_fields(args),
    }
    if args.config:
        from ddrank.compat.ddranking_config import translate_ddranking_config

        if args.protocol:
            raise InputError("give either --config (a DD-Ranking YAML) or --protocol, not both")
        settings_of(**fields)  # flags are checked (and named) before the file's values fill the rest
        config = translate_ddranking_config(args.config, metric=args.metric, fidelity=args.fidelity)
        settings = RunSettings.from_translated(config, **fields)
    else:
        settings = settings_of(**fields)
    if args.students is None:
        return [settings]
    if not args.students.strip():
        raise InputError(
            "--students takes a comma-separated list of model names (e.g. ConvNet-3,MLP), "
            f"got {args.students!r}"
        )
    try:
        return settings.for_students([s.strip() for s in args.students.split(",")])
    except SettingError as exc:
        raise exc.renamed(f"--students {args.students!r}") from None


QUICK_ROUNDS = 2


def smoke_settings(
    matrix: list[RunSettings], epochs: int | None, *, rounds_given: bool
) -> tuple[list[RunSettings], dict[str, Any]]:
    """Settings for a smoke run: ``epochs`` per student, the whole-data one included (default: a tenth of
    each run's), so that acc(real, hard) is as short as the rest and HLR compares like with like; unless
    --rounds is given, 2 rounds. The epochs are part of the protocol, so its hash (and leaderboard group)
    differs from the full run's; the rounds stay a run setting outside the hash, as in a full run, so
    --quick and --quick --rounds 2 share one. The returned note is recorded as the evaluation's ``smoke``
    provenance."""
    from ddrank.protocols import Protocol, load_protocol

    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs takes a positive number of epochs, got {epochs}")
    out, note = [], {}
    for settings in matrix:
        source = settings.protocol_source
        base = (
            source
            if isinstance(source, Protocol)
            else load_protocol(source, dataset=settings.dataset, ipc=settings.ipc, fidelity=settings.fidelity)
        )
        chosen = epochs if epochs is not None else max(1, base.epochs // 10)
        full = base.full_data
        full_epochs = epochs if epochs is not None else max(1, full.epochs // 10)
        note = {
            "epochs": chosen,
            "protocol_epochs": base.epochs,
            "full_data_epochs": full_epochs,
            "protocol_full_data_epochs": full.epochs,
        }
        shortened = full.model_copy(update={"epochs": full_epochs})
        changes: dict[str, Any] = {"protocol": base.with_overrides(epochs=chosen, full_data=shortened)}
        if not rounds_given:
            changes["rounds"] = QUICK_ROUNDS
        out.append(settings.replace(**changes))
    return out, note


def _store_file(path: str | None) -> Path:
    """The results store file at ``path`` (default: the cache's); a folder there is refused."""
    target = _store_location(path)
    if target.is_dir():
        raise StoreError(f"results store {shown(target)} is a folder, not a file; give --store FILE")
    return target


def open_store(path: str | None, *, must_exist: bool, readonly: bool = False) -> ResultStore:
    """The results store at ``path`` (default: the cache's); reading commands refuse a missing one and
    open it ``readonly`` (it is never written, and may be on read-only media)."""
    target = _store_file(path)
    if must_exist and not target.exists():
        raise StoreError(
            f"no results store at {shown(target)}; record evaluations there first or pass --store PATH"
        )
    return ResultStore(target, readonly=readonly)


def check_store(args: argparse.Namespace) -> None:
    """Refuse a damaged or foreign results store before anything is loaded or trained: an existing store
    is opened read-only and checked whole (SQLite's quick_check and every row), so a refused file is
    never modified, not even migrated."""
    from ddrank.store import inspect_store

    if args.no_store:
        return
    target = _store_file(args.store)
    if target.is_file() and inspect_store(target) is not None:
        with ResultStore(target, readonly=True) as store:
            store.check_integrity()


def _store_for(args: argparse.Namespace) -> ResultStore | None:
    """The results store a run records into: --store PATH, the default one, or none with --no-store."""
    return None if args.no_store else open_store(args.store, must_exist=False)


def report_divergence(results: list[Evaluation]) -> None:
    """One line on stderr per evaluation in which some students' training diverged."""
    for result in results:
        if result.diverged:
            jobs = sum(len(runs) for r in result.rounds for runs in r.runs.values())
            warn(
                f"{result.method}: {result.diverged} of its {jobs} training runs diverged (non-finite loss "
                'or logits); each was stopped and scored as it predicts (flagged "diverged" in the JSON '
                "runs): check the set's values and the learning rates"
            )


# -- evaluate, demo, sweep --------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from ddrank import distributed
    from ddrank.data.synthetic import load_synthetic
    from ddrank.evaluation import Evaluator
    from ddrank.progress import Reporter
    from ddrank.report.leaderboard import build_leaderboard
    from ddrank.report.render import leaderboard_table, student_table

    if not args.images and not args.dry_run:
        raise InputError("ddrank evaluate needs --images (the synthetic set), or --dry-run to only plan")
    check_output(
        args.json,
        "--json",
        store=None if args.dry_run else store_path(args),
        images=args.images,
        labels=args.labels,
        config=args.config,
        protocol=args.protocol,
        teacher=args.teacher,
        calibration=args.calibration,
    )
    matrix = run_settings(args)
    smoke = None
    if args.epochs is not None or args.quick:
        matrix, smoke = smoke_settings(matrix, args.epochs, rounds_given=args.rounds is not None)
    method = method_name(args)
    syn = None
    if args.images:
        reading = {} if args.max_input_size is None else {"max_bytes": args.max_input_size}
        syn = load_synthetic(
            args.images,
            args.labels,
            format=args.format,
            lr=args.lr,
            space=args.space,
            allow_pickle=args.allow_pickle,
            **reading,
        )
        for note in syn.notes:
            print(f"ddrank: note: {' '.join(note.split())} (--labels)", file=sys.stderr)
    if args.dry_run:
        for settings in matrix:
            _check_teachers_used(Evaluator(settings), syn)
        return _dry_run(
            console,
            matrix,
            syn,
            method,
            args.json,
            verbose=args.verbose,
            resize=args.resize,
            strict=args.strict,
        )
    check_store(args)
    store = _store_for(args)
    notes = DeviationNotes(args.verbose)  # one set of notes across the students of a matrix
    with Reporter(enabled=not args.no_progress) as reporter:
        evaluators = []
        warned: set[str] = set()
        for settings in matrix:
            evaluator = Evaluator(settings, store=store, reporter=reporter, say=notes)
            _check_teachers_used(evaluator, syn)
            if smoke is not None:
                evaluator.extra_provenance["smoke"] = smoke
            validated = evaluator.validate(syn, resize=args.resize, strict=args.strict)  # all before training
            for warning in validated.warnings:
                if warning.message not in warned:
                    warned.add(warning.message)
                    warn(warning.message)
            evaluators.append((evaluator, validated))
        started = time.perf_counter()
        results = [evaluator.evaluate_sets({method: validated})[0] for evaluator, validated in evaluators]
    for result in results if distributed.world().main else ():  # one rank speaks
        for line in calibration_warnings(result.dataset, result.calibration):
            reporter.console.print("ddrank: warning: " + line, highlight=False, markup=False, soft_wrap=True)
    rows = build_leaderboard(results, metric=matrix[0].metric)
    if len(results) > 1:  # a cross-architecture matrix: one row per student, named from its own row
        order = {r.student: i for i, r in enumerate(results)}  # as --students lists them
        rows.sort(key=lambda row: order.get(row["student"], len(order)))
        _show(console, student_table(rows, title=f"{method} · one evaluation per student"))
    else:
        _show(console, leaderboard_table(rows, title=f"{method} · {rows[0]['dataset']} · {matrix[0].metric}"))
    report_divergence(results)
    reporter.log(f"done in {time.perf_counter() - started:.1f} s")
    if args.json:
        _write_json(args.json, evaluations_document(results), stored=store is not None)
        reporter.log(f"wrote {args.json}")
    return 0


def _check_teachers_used(evaluator: Any, syn: Any) -> None:
    """Refuse --teacher under a protocol that labels with no teacher (hard labels)."""
    settings = evaluator.settings
    if not settings.teachers:
        return
    ipc = settings.ipc
    if ipc is None and syn is not None:
        classes = evaluator.info.num_classes
        ipc = len(syn.images) // classes if len(syn.images) % classes == 0 else None
    protocol = evaluator.protocol_for(ipc)
    if protocol.labels.mode == "hard" or not protocol.labels.teachers:
        raise InputError(
            f"--teacher was given, but protocol {protocol.name!r} trains on hard labels and uses no "
            "teacher; drop --teacher or choose a soft-label protocol (ddrank list protocols)"
        )


def ipc_list(text: str) -> list[int]:
    """``--ipc 1,10,50`` as positive integers."""
    try:
        ipcs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ipcs = []
    if not ipcs or min(ipcs) < 1:
        raise InputError(f"--ipc takes comma-separated positive integers (e.g. 1,10,50), got {text!r}")
    return ipcs


def calibration_protocol(dataset: str, table_path: str | None) -> str:
    """The protocol a calibration runs under when none is given: the one the dataset's published
    baselines were measured under, else the dataset's default protocol."""
    from ddrank.calibration import published_table
    from ddrank.data.real import dataset_info
    from ddrank.protocols import default_protocol

    name = dataset_info(dataset).name
    published = published_table(table_path).for_dataset(name)
    return published[0].protocol if published else default_protocol(name)


def cmd_calibrate(args: argparse.Namespace, console: Console) -> int:
    """Train the random-subset and whole-data baselines, print them beside the published values."""
    from ddrank.evaluation import Evaluator
    from ddrank.progress import Reporter

    ipcs = ipc_list(args.ipc)
    check_output(
        args.json, "--json", store=store_path(args), protocol=args.protocol, calibration=args.calibration
    )
    settings = settings_of(
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download or None,
        protocol=args.protocol or calibration_protocol(args.dataset, args.calibration),
        rounds=args.rounds,
        calibration=args.calibration,
        **engine_fields(args),
    )
    store = _store_for(args)
    with Reporter(enabled=not args.no_progress) as reporter:
        calibration = Evaluator(settings, store=store, reporter=reporter).calibrate(ipcs)
    for line in calibration.lines(width=80):
        _print(console, line)
    if args.json:
        _write_json(args.json, calibration.to_dict(), stored=store is not None)
        reporter.log(f"wrote {args.json}")
    return 0


DEVIATION = "ddrank: deviation: "


class DeviationNotes:
    """Says each deviation of a protocol from its source once, on stderr before training: one line of
    at most 80 columns (key, whether it moves scores, source → ddrank), after a line saying where the
    reasons are; ``verbose``: the full line with its reason. The stored record and --json keep it all."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.said: set[str] = set()

    def __call__(self, found: Deviation | str) -> None:
        line = " ".join(str(found).split())
        if line in self.said:  # the same deviation under another student of a matrix
            return
        if not self.said and not self.verbose:
            print("ddrank: deviations from the source; --verbose or --json give reasons:", file=sys.stderr)
        self.said.add(line)
        if not self.verbose and isinstance(found, Deviation):
            line = found.summary(80 - len(DEVIATION))
        print(DEVIATION + line, file=sys.stderr)


def _dry_run(
    console: Console,
    matrix: list[RunSettings],
    syn: Any,
    method: str,
    json_path: str | None,
    *,
    verbose: bool = False,
    resize: bool = False,
    strict: bool = False,
) -> int:
    """``evaluate --dry-run``: the set checked as the run would check it (its refusals, then its warnings),
    and the resolved protocol, deviations and job plan of each settings."""
    from ddrank.planning import dry_run, dry_run_lines

    reports = [dry_run(s, syn, method, resize=resize, strict=strict) for s in matrix]  # every refusal first
    for message in dict.fromkeys(w for report in reports for w in report["warnings"]):
        warn(message)
    for report in reports:
        notes = DeviationNotes(verbose)
        for deviation in report["deviations"]:
            notes(Deviation(**deviation))
        for line in dry_run_lines(report):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    if json_path:
        _write_json(json_path, reports[0] if len(reports) == 1 else reports, stored=False)
        _print(console, f"wrote {json_path}")
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from ddrank.demo import DemoSettings, run_demo
    from ddrank.progress import Reporter
    from ddrank.report.html import render_html
    from ddrank.report.leaderboard import build_leaderboard
    from ddrank.report.render import leaderboard_table

    check_output(args.json, "--json", store=store_path(args))
    check_output(args.html, "--html", store=store_path(args), json=args.json)
    check_store(args)
    run = settings_of(**engine_fields(args))
    settings = DemoSettings(quick=args.quick, soft=not args.hard_only, run=run)
    store = _store_for(args)
    started = time.perf_counter()
    with Reporter(enabled=not args.no_progress) as reporter:
        sections = run_demo(settings, reporter, store=store)
    for results in sections.values():
        report_divergence(results)
    rows = []
    for section, results in sections.items():
        rows += results
        title = f"digits · protocol {results[0].protocol}" + (" (quick)" if args.quick else "")
        _show(console, leaderboard_table(build_leaderboard(results), title=f"{title} · {section} labels"))
    if "soft" in sections:
        _print(console, _gap_summary(sections))
    _print(console, f"{len(rows)} evaluations in {time.perf_counter() - started:.1f} s")
    if args.html is not None:
        html_path = Path(args.html)
        board = build_leaderboard(rows, metric="lrs")  # every section: hard and teacher labels
        try:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(render_html(board, title="ddrank demo · digits"), encoding="utf-8")
        except OSError as exc:
            kept = "the results are in the results store" if store is not None else "nothing was stored"
            raise InputError(
                f"cannot write --html {shown(args.html)}: {exc.strerror or one_line(exc)}; {kept}"
            ) from exc
        _print(console, f"leaderboard: {html_path.resolve()}")
    if args.json:
        _write_json(args.json, evaluations_document(rows), stored=store is not None)
        _print(console, f"wrote {args.json}")
    return 0


def _gap_summary(sections: dict[str, list[Evaluation]]) -> str:
    """How much of the distilled sets' lead over random survives when students learn from a teacher."""
    lines = ["acc(syn) − acc(random subset) in percentage points, hard labels → teacher (soft) labels:"]
    for ipc in sorted({r.ipc for r in sections["hard"]}):
        hard = {r.method: r.summaries["ior"].mean for r in sections["hard"] if r.ipc == ipc}
        soft = {r.method: r.summaries["ior"].mean for r in sections["soft"] if r.ipc == ipc}
        parts = [
            f"{method} {100 * hard[method]:+.1f} → {100 * soft[method]:+.1f}"
            for method in ("dm", "herding", "kcenter")
            if method in hard and method in soft
        ]
        lines.append(f"  IPC {ipc}: " + ", ".join(parts))
    return "\n".join(lines)


def cmd_sweep(args: argparse.Namespace, console: Console) -> int:
    """Run every entry of a sweep file (each evaluation is distributed under torchrun)."""
    from ddrank.data.synthetic import load_synthetic
    from ddrank.evaluation import Evaluator
    from ddrank.progress import Reporter
    from ddrank.sweep import load_sweep

    check_store(args)
    entries = load_sweep(args.file)
    missing = [e.name for e in entries if not e.images]
    if missing:
        raise InputError(
            f"sweep entries need images to run: {', '.join(missing[:3])}; plan them with ddrank plan"
        )
    inputs = [args.file, *(path for e in entries for path in (e.images, e.labels) if path)]
    check_output(args.json, "--json", store=store_path(args), **{"the sweep's input": inputs})
    base = settings_of(
        data_root=args.data_root,
        metric=args.metric,
        rounds=args.rounds,
        teacher_dir=args.teacher_dir,
        fidelity=args.fidelity,
        **engine_fields(args),
    )
    # Every entry's settings, protocol and set are checked before the first one trains: a bad entry
    # late in the file must not cost the work of the ones before it.
    for entry in entries:
        checked = Evaluator(entry.settings(base)).validate(load_synthetic(entry.images, entry.labels))
        for warning in checked.warnings:
            warn(f"{entry.name}: {warning.message}")
    store = _store_for(args)
    rows = []
    with Reporter(enabled=not args.no_progress) as reporter:
        for entry in entries:
            notes = DeviationNotes(args.verbose)
            evaluator = Evaluator(entry.settings(base), store=store, reporter=reporter, say=notes)
            validated = evaluator.validate(load_synthetic(entry.images, entry.labels))
            result = evaluator.evaluate_sets({entry.method: validated})[0]
            rows.append(result)
            report_divergence([result])
            score = evaluator.definition.score
            reporter.log(f"{entry.name}: {score.label} {100 * result.summaries[score.field].mean:.2f}%")
    if args.json:
        _write_json(args.json, evaluations_document(rows))
    return 0


# -- plan ----------------------------------------------------------------------------------------


def world_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--world-size takes comma-separated positive integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise InputError(f"--world-size takes comma-separated positive integers, got {text!r}")
    return sizes


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    """Units, measured costs and the split over each world size, without training anything."""
    from ddrank.data.synthetic import load_synthetic
    from ddrank.planning import plan_evaluation, plan_report, plan_sweep

    sizes = world_sizes(args.world_size)
    if args.sweep:
        from ddrank.sweep import load_sweep

        entries = load_sweep(args.sweep)
        settings = settings_of(
            metric=args.metric, rounds=args.rounds, real_acc=args.real_acc, **engine_fields(args)
        )
        run = plan_sweep(entries, settings)
        run = replace(run, what=f"sweep {args.sweep}: {run.what}")
    else:
        settings = run_settings(args)[0]
        if not args.images and settings.ipc is None:
            raise InputError("ddrank plan needs --images or --ipc (the synthetic set's images per class)")
        syn = (
            load_synthetic(args.images, args.labels, allow_pickle=args.allow_pickle) if args.images else None
        )
        run = plan_evaluation(settings, syn, method_name(args))
    run = _without_stored_jobs(run, args.store, console)
    if not run.jobs:
        return 0
    for line in plan_report(run, sizes, settings):
        _print(console, line)
    return 0


def _without_stored_jobs(run: Any, path: str | None, console: Console) -> Any:
    """The planned run less the jobs the results store already holds (a rerun reuses them), said in a line."""
    from ddrank.paths import cache_dir

    target = Path(path) if path else cache_dir() / "results.sqlite"
    if not target.exists():
        if path:
            raise StoreError(f"no results store at {target}; give an existing --store or leave it out")
        return run
    with ResultStore(target, readonly=True) as store:
        remaining = [job for job in run.jobs if store.get(job) is None]
    done = len(run.jobs) - len(remaining)
    _print(
        console,
        f"{done} of {len(run.jobs)} jobs are already in {target} and are reused; {len(remaining)} to train",
    )
    return replace(run, jobs=remaining)


# -- teachers, baselines, listings -----------------------------------------------------------------


def _recipe_with(recipe: Any, **flags: Any) -> Any:
    """``recipe`` with the given --epochs / --lr, checked as a protocol's values are (a positive, finite
    learning rate within the sanity bound; epochs within the limit)."""
    from pydantic import ValidationError

    updates = {name: value for name, value in flags.items() if value is not None}
    if not updates:
        return recipe
    try:
        return type(recipe).model_validate(recipe.model_dump() | updates)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else next(iter(updates))
        reason = str(error["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
        value = updates.get(name)
        shown_value = f"{value:g}" if isinstance(value, float) else str(value)
        raise InputError(f"--{name.replace('_', '-')} {shown_value}: {reason}") from None


def cmd_teacher_train(args: argparse.Namespace, console: Console) -> int:
    from ddrank.data.real import load_real
    from ddrank.evaluation.teachers import train_teacher
    from ddrank.progress import Reporter
    from ddrank.protocols import load_protocol

    check_output(args.out, "--out", protocol=args.protocol)
    device = settings_of(
        device=args.device, seed=args.seed
    ).torch_device  # checked: a torch device that is available
    real = load_real(args.dataset, args.data_root, download=args.download)
    recipe = load_protocol(args.protocol or real.info.name, dataset=real.info.name).full_data
    recipe = _recipe_with(recipe, epochs=args.epochs, lr=args.lr)
    with Reporter(enabled=not args.no_progress) as reporter:
        trained = train_teacher(
            real, args.model, recipe, args.out, seed=args.seed, device=device, reporter=reporter
        )
    _print(
        console,
        f"wrote {trained.path}: {trained.model} on {real.info.name}, "
        f"test accuracy {100 * trained.test_acc:.2f}%",
    )
    return 0


def cmd_baseline(args: argparse.Namespace, console: Console) -> int:
    import torch

    from ddrank.baselines import generate
    from ddrank.data.real import load_real

    suffix = Path(args.out).suffix.lower()
    if suffix not in (".pt", ".pth", ".npz"):
        raise InputError(f"--out {shown(args.out)}: give a .pt (torch) or .npz (numpy) file name")
    settings_of(seed=args.seed)  # a non-negative integer, as evaluate takes
    check_output(args.out, "--out")
    real = load_real(args.dataset, args.data_root, download=args.download)
    from ddrank.baselines import BASELINES
    from ddrank.progress import Reporter

    generator = BASELINES.get(args.method)
    with Reporter(enabled=not args.no_progress) as reporter:
        options: dict[str, Any] = {}
        if "progress" in inspect.signature(generator).parameters:  # dm: hundreds of matching iterations
            total = inspect.signature(generator).parameters["iterations"].default
            reporter.start(f"baseline {BASELINES.canonical(args.method)}", total, unit="iterations")
            options["progress"] = reporter.advance
        syn = generate(args.method, real, args.ipc, seed=args.seed, **options)
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            import numpy as np

            with open(args.out, "wb") as handle:  # np.savez would add .npz to another name
                np.savez(handle, images=syn.images.numpy(), labels=syn.labels.numpy())
        else:
            torch.save({"images": syn.images, "labels": syn.labels}, args.out)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed open as a RuntimeError
        message = getattr(exc, "strerror", None) or one_line(exc)
        raise InputError(f"cannot write --out {shown(args.out)}: {message}") from exc
    _print(console, f"wrote {args.out}: {tuple(syn.images.shape)} normalised images, class-major labels")
    return 0


def _summary(description: str) -> str:
    """A preset description's first clause ("DSA evaluation (Zhao & Bilen, 2021)"): one line in a list."""
    return re.split(r"[:.;] ", " ".join(description.split()), maxsplit=1)[0].rstrip(".")


def _listing(kind: str, pattern: str | None = None, long: bool = False) -> Table:
    from ddrank.baselines import BASELINES
    from ddrank.data.real import DATASETS
    from ddrank.data.synthetic import FORMATS
    from ddrank.labels import list_losses
    from ddrank.models import describe_models
    from ddrank.protocols import preset, preset_names

    def wanted(name: str) -> bool:
        return pattern is None or fnmatch.fnmatch(name.lower(), pattern.lower())

    # Light rules and no outer edge: the description column gets the width, and every cell is a Text
    # (shown as typed: "[images, labels]" is never read as rich markup).
    table = Table(
        title=kind, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False
    )
    table.add_column("name", max_width=26, overflow="fold")
    if kind == "protocols":
        table.add_column("datasets", **({"max_width": 16} if long else {"ratio": 1}))
        table.add_column("description" if long else "evaluation", ratio=1)
        for name in filter(wanted, preset_names()):
            doc = preset(name)
            description = doc.get("description", "")
            table.add_row(
                Text(name),
                Text(", ".join(doc.get("datasets", []))),
                Text(" ".join(description.split()) if long else _summary(description)),
            )
        if not long:
            table.caption = (
                "--long: whole descriptions; ddrank protocol show NAME --dataset D --ipc N: every setting"
            )
            table.caption_justify = "left"
        return table
    table.add_column("description", ratio=1)
    rows = {
        "models": describe_models,
        "datasets": lambda: [(e.name, e.description) for e in DATASETS.entries()],
        "formats": lambda: [(e.name, e.description) for e in FORMATS.entries()],
        "baselines": lambda: [(e.name, e.description) for e in BASELINES.entries()],
        "losses": list_losses,
    }[kind]()
    for name, description in rows:
        if wanted(name):
            table.add_row(Text(name), Text(description))
    return table


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    table = _listing(args.kind, args.pattern, long=args.long)
    if not table.row_count:
        everything = [str(cell) for cell in _listing(args.kind).columns[0].cells]
        raise InputError(f"no {args.kind} match {args.pattern!r} (known: {', '.join(everything)})")
    _show(console, table)
    return 0


def cmd_protocol_show(args: argparse.Namespace, console: Console) -> int:
    from ddrank.data.real import dataset_info
    from ddrank.protocols import load_protocol, preset, preset_names

    dataset = dataset_info(args.dataset).name if args.dataset else None
    proto = load_protocol(args.name, dataset=dataset, ipc=args.ipc, fidelity=args.fidelity)
    if dataset is None and proto.dataset is not None:
        # Without --dataset a protocol names its first dataset: resolve it for that one, its rules and
        # reference included, so that what is shown is what an evaluation on that dataset runs.
        proto = load_protocol(args.name, dataset=proto.dataset, ipc=args.ipc, fidelity=args.fidelity)
    _print(
        console, f"# {proto.name} v{proto.version}, fidelity {proto.fidelity}, hash {proto.content_hash()}"
    )
    where = "any dataset" if proto.dataset is None else f"dataset {proto.dataset}"
    is_preset = args.name.lower() in map(str.lower, preset_names())
    if dataset is None and is_preset and len(preset(args.name).get("datasets") or ()) > 1:
        where += " (its first; --dataset picks another)"
    where += f", IPC {proto.ipc}" if proto.ipc is not None else ", any IPC (--ipc picks one)"
    for text in (
        f"resolved for {where}",
        f"reproduces: {proto.reference_source or 'no published reference'}",
    ):
        for line in textwrap.wrap(text, 78):
            _print(console, f"# {line}")
    shown = proto.model_dump(mode="json")
    if shown["reference_source"] is None:
        shown["reference_source"] = "no published reference"
    console.print(folded_yaml(shown), highlight=False, markup=False, soft_wrap=True, end="")
    return 0


def folded_yaml(document: Any, columns: int = 80) -> str:
    """``document`` as YAML whose long strings fold so that every line fits ``columns`` where a fold can
    (a single long word cannot); it loads back to the same document. PyYAML folds only after passing its
    best width, so the widest best width that fits is chosen."""
    import yaml

    def dump(width: int) -> str:
        return yaml.safe_dump(document, sort_keys=False, width=width, allow_unicode=True)

    def widest(text: str) -> int:
        return max((len(line) for line in text.splitlines()), default=0)

    candidates = [dump(width) for width in range(columns - 2, 39, -4)]
    fitting = [text for text in candidates if widest(text) <= columns]
    return fitting[0] if fitting else min(candidates, key=widest)


# -- the results store -------------------------------------------------------------------------------


def _selection(args: argparse.Namespace) -> Any:
    """The group filters of a leaderboard, compare or rm command."""
    from ddrank.report.leaderboard import Selection

    return Selection(
        dataset=args.dataset,
        ipc=args.ipc,
        protocol=args.protocol,
        student=args.student,
        labels=args.labels,
        fidelity=args.fidelity,
        weight=args.weight,
        acc_real=args.acc_real,
        smoke=args.smoke,
    )


def _hints(store: ResultStore, selection: Any) -> str:
    """What a filter that matches nothing recorded was probably meant to be (see filter_hints): the closest
    recorded name, else the closest registered dataset or protocol."""
    from ddrank.data.real import DATASETS
    from ddrank.evaluation import recorded_evaluations
    from ddrank.protocols import preset_names
    from ddrank.report.leaderboard import filter_hints

    known = {"dataset": DATASETS.names(), "protocol": list(preset_names())}
    return filter_hints(recorded_evaluations(store), selection, known)


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from ddrank.evaluation import recorded_evaluations
    from ddrank.metrics.definitions import metric_definition
    from ddrank.report.leaderboard import LeaderboardError, build_leaderboard
    from ddrank.report.render import leaderboard_table, render

    selection = _selection(args)
    out = args.out or ("leaderboard.html" if args.format == "html" else None)
    check_output(out, "--out", store=store_path(args))
    with open_store(args.store, must_exist=True, readonly=True) as store:
        evaluations = recorded_evaluations(store, dataset=args.dataset, ipc=args.ipc)
        rows = build_leaderboard(evaluations, metric=args.metric, selection=selection, history=args.all)
        if not rows:
            label, hints = metric_definition(args.metric).label, _hints(store, selection)
            raise LeaderboardError(
                f"no {label} evaluations recorded in {store.path}{selection.words()}{hints}"
            )
    if args.format == "table" and not args.out:
        if console.is_terminal or not args.wide:
            _show(console, leaderboard_table(rows, wide=args.wide))
        else:  # piped and wide: every column on one line
            print(render(rows, "table", wide=True), end="")
        return 0
    text = render(rows, args.format, wide=args.wide)
    if out is None:
        print(text, end="")
        return 0
    target = Path(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write --out {shown(out)}: {exc.strerror or one_line(exc)}") from exc
    _print(console, f"wrote {target.resolve()}")
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from ddrank.evaluation import recorded_evaluations
    from ddrank.metrics.definitions import metric_definition
    from ddrank.report.leaderboard import LeaderboardError, compare_methods

    selection = _selection(args)
    with open_store(args.store, must_exist=True, readonly=True) as store:
        evaluations = recorded_evaluations(store, dataset=args.dataset, ipc=args.ipc)
        try:
            c = compare_methods(evaluations, args.a, args.b, metric=args.metric, selection=selection)
        except LeaderboardError as exc:
            hints = _hints(store, selection)
            if not hints:
                raise
            raise LeaderboardError(f"{exc}{hints}") from exc
    r, label = c.result, metric_definition(c.metric).label
    level = 1.0 - r.confidence
    partial = any(c.left_out)
    on = " on the shared seeds" if partial else ""
    if r.p_value < level:
        better = c.method_a if r.mean_difference > 0 else c.method_b
        verdict = f"{better} scores higher{on} (p < {level:g})"
    else:
        verdict = f"no significant difference{on} at the {100 * level:g}% level"
    lines = [
        f"{c.method_a} − {c.method_b}: {label}{' (optimistic)' if c.optimistic else ''}, "
        f"{r.n} rounds matched by seed ({r.test})" + ("; the shared seeds only" if partial else ""),
        *_joined_lines("group: ", c.group_label.split(" · "), indent=" " * len("group: ")),
    ]
    methods = (c.method_a, c.method_b)
    for method, other, seeds in zip(methods, reversed(methods), c.left_out, strict=True):
        if seeds:
            lines.append(
                f"left out: {len(seeds)} of {len(seeds) + r.n} rounds of {method} (seed "
                f"{', '.join(map(str, seeds))}), which {other} did not run; the leaderboard ranks each "
                "method on all its rounds"
            )
    if c.optimistic:
        lines.append(
            "optimistic: these evaluations use reference selection (the best test accuracy over learning "
            "rates and checkpoints), which overstates their scores"
        )
    lines += [
        f"mean difference {100 * r.mean_difference:+.2f} percentage points, "
        f"{100 * r.confidence:g}% CI [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}], p = {r.p_value:.3g}",
        verdict,
    ]
    for line in lines:  # a report, not a log line: within 80 columns, continued under its label
        head = line.split(": ", 1)[0] + ": " if line.startswith(("left out: ", "optimistic: ")) else "  "
        indent = " " * len(head)
        for part in textwrap.wrap(line, 80, subsequent_indent=indent, break_on_hyphens=False) or [""]:
            _print(console, part)
    return 0


def cmd_rm(args: argparse.Namespace, console: Console) -> int:
    """Remove evaluations by id or by filter, after a confirmation; jobs stay cached."""
    import sys

    from ddrank.evaluation import recorded_evaluations

    selection = _selection(args)
    filtered = args.method is not None or args.metric is not None or selection.words() != ""
    if not args.ids and not filtered:
        raise InputError(
            "ddrank rm needs evaluation ids or filters (--method, --metric, --dataset, ...); nothing removed"
        )
    with open_store(args.store, must_exist=True) as store:
        found = recorded_evaluations(
            store, method=args.method, metric=args.metric, dataset=args.dataset, ipc=args.ipc
        )
        chosen = [e for e in found if selection.matches(e) and (not args.ids or e.record_id in args.ids)]
        missing = sorted(set(args.ids) - {e.record_id for e in chosen})
        if missing:
            raise InputError(
                f"no recorded evaluation with id {', '.join(map(str, missing))}"
                f"{' matching the filters' if filtered else ''} in {store.path}; "
                "list them with ddrank leaderboard --all --wide; nothing removed"
            )
        if not chosen:
            raise InputError(
                f"no recorded evaluation matches the filters in {store.path}{_hints(store, selection)}; "
                "nothing removed"
            )
        for e in chosen:
            for line in _listed(e):
                _print(console, line)
        if not args.yes:
            if not sys.stdin.isatty():
                raise InputError(f"{len(chosen)} evaluation(s) would be removed; confirm with --yes")
            answer = input(f"remove {len(chosen)} evaluation(s)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                _print(console, "nothing removed")
                return 0
        removed = store.remove_evaluations([e.record_id for e in chosen if e.record_id is not None])
    _print(console, f"removed {removed} evaluation(s); their trained jobs stay cached")
    return 0


def _recorded_words(recorded: str | None) -> str:
    """A store timestamp to the second, in UTC (``2026-11-30 14:50:05 UTC``); as stored when unreadable."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(str(recorded))
    except ValueError:
        return str(recorded)
    if when.tzinfo is None:
        return when.strftime("%Y-%m-%d %H:%M:%S")
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _listed(evaluation: Evaluation, width: int = 80) -> list[str]:
    """An evaluation as ``ddrank rm`` lists it, within ``width`` columns: id, method, metric, rounds and
    time on one line (evaluations of one method that differ only in their metric stand apart), then its
    group on indented lines, broken between fields."""
    from ddrank.metrics.definitions import metric_definition
    from ddrank.report.leaderboard import group_label

    e = evaluation
    indent = "    "
    head = (
        f"#{e.record_id} {e.method} · {metric_definition(e.metric).label} · {len(e.rounds)} rounds · "
        f"recorded {_recorded_words(e.recorded)}"
    )
    lines = textwrap.wrap(head, width, subsequent_indent=indent)  # folds only a very long method name
    return lines + _joined_lines(indent, group_label(_group_row(e)).split(" · "), width, indent)


def _joined_lines(first: str, fields: list[str], width: int = 80, indent: str = "    ") -> list[str]:
    """``first`` then ``fields`` joined by " · ", within ``width`` columns: broken between fields (a line
    ends with " ·") and continued on lines starting with ``indent``; a field wider than a line is folded."""
    lines, line = [], first + fields[0]
    for field in fields[1:]:
        if len(line) + len(" · ") + len(field) + len(" ·") <= width:  # room for " ·" if the line must end
            line += " · " + field
        else:
            lines.append(line + " ·")
            line = indent + field
    lines.append(line)
    return [short for long in lines for short in textwrap.wrap(long, width, subsequent_indent=indent)]


def _group_row(evaluation: Evaluation) -> dict[str, Any]:
    from ddrank.report.leaderboard import GROUP_FIELDS, group_of

    group = dict(zip(GROUP_FIELDS, group_of(evaluation), strict=True))
    return group | {"smoke": evaluation.smoke, "metric": evaluation.metric}


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    check_output(args.out, "--out", store=store_path(args))
    with open_store(args.store, must_exist=True, readonly=True) as store:
        rows = store.export(args.out)
        jobs, evaluations = store.job_count(), len(store.evaluations())
        source = store.path
    _print(
        console, f"exported {rows} rows ({jobs} jobs, {evaluations} evaluations) from {source} to {args.out}"
    )
    return 0


def cmd_import(args: argparse.Namespace, console: Console) -> int:
    from ddrank.store import read_export

    target = store_path(args)
    if _same_file(args.file, target):
        raise StoreError(
            f"{shown(args.file)} is the results store itself; give an export file (ddrank export)"
        )
    rows = read_export(args.file)  # the whole file is checked before the store is created or changed
    with open_store(args.store, must_exist=False) as store:
        jobs, evaluations = store.import_(args.file, rows)
        target = store.path
    _print(
        console, f"imported {jobs} new jobs and {evaluations} new evaluations from {args.file} into {target}"
    )
    return 0

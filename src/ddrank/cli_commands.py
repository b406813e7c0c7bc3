"""What each ``ddrank`` command does with its parsed arguments: translate them into run settings, call
the public API, and print. No evaluation logic lives here."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ddrank.errors import InputError, one_line, shown
from ddrank.evaluation import Evaluation
from ddrank.settings import RunSettings, SettingError
from ddrank.store import ResultStore, StoreError


def check_output(path: str | None, flag: str) -> None:
    """Refuse an output path that cannot be written (a folder, a folder that is a file, no permission),
    before anything trains."""
    if path is None:
        return
    target = Path(path)
    where = f"{flag} {shown(path)}"
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


def _write_json(path: str, payload: Any, flag: str = "--json") -> None:
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
            f"cannot write {flag} {shown(path)}{full}: {exc.strerror or one_line(exc)}; the results are in "
            "the results store (ddrank export writes them out)"
        ) from exc


def warn(line: str) -> None:
    """One warning line on stderr."""
    print(f"ddrank: warning: {shown(' '.join(line.split()))}", file=sys.stderr)


def _print(console: Console, line: str) -> None:
    console.print(line, highlight=False, markup=False)


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
        **engine_fields(args),
    }
    if args.config:
        from ddrank.compat.ddranking_config import translate_ddranking_config

        if args.protocol:
            raise InputError("give either --config (a DD-Ranking YAML) or --protocol, not both")
        settings_of(**fields)  # flags are checked (and named) before the file's values fill the rest
        config = translate_ddranking_config(args.config, metric=args.metric)
        settings = RunSettings.from_translated(config, **fields)
    else:
        settings = settings_of(**fields)
    if not args.students:
        return [settings]
    students = [s.strip() for s in args.students.split(",") if s.strip()]
    if not students:
        raise InputError("--students takes a comma-separated list of model names")
    return settings.for_students(students)


def open_store(path: str | None, *, must_exist: bool, readonly: bool = False) -> ResultStore:
    """The results store at ``path`` (default: the cache's); reading commands refuse a missing one and
    open it ``readonly`` (it is never written, and may be on read-only media)."""
    from ddrank.paths import cache_dir

    target = Path(path) if path else cache_dir() / "results.sqlite"
    if must_exist and not target.exists():
        raise StoreError(
            f"no results store at {shown(target)}; record evaluations there first or pass --store PATH"
        )
    return ResultStore(target, readonly=readonly)


def check_store(args: argparse.Namespace) -> None:
    """Refuse a damaged or foreign results store before anything is loaded or trained: an existing store
    is opened read-only and checked whole (SQLite's quick_check and every row), so a refused file is
    never modified, not even migrated."""
    from ddrank.paths import cache_dir
    from ddrank.store import inspect_store

    if args.no_store:
        return
    target = Path(args.store) if args.store else cache_dir() / "results.sqlite"
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
    from ddrank.data.synthetic import load_synthetic
    from ddrank.evaluation import Evaluator
    from ddrank.progress import Reporter
    from ddrank.report.leaderboard import build_leaderboard
    from ddrank.report.render import leaderboard_table

    check_output(args.json, "--json")
    check_store(args)
    matrix = run_settings(args)
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
    store = _store_for(args)
    with Reporter(enabled=not args.no_progress) as reporter:
        evaluators = []
        warned: set[str] = set()
        for settings in matrix:
            evaluator = Evaluator(settings, store=store, reporter=reporter)
            validated = evaluator.validate(syn, resize=args.resize, strict=args.strict)  # all before training
            for warning in validated.warnings:
                if warning.message not in warned:
                    warned.add(warning.message)
                    warn(warning.message)
            evaluators.append((evaluator, validated))
        started = time.perf_counter()
        results = [
            evaluator.evaluate_sets({args.method: validated})[0] for evaluator, validated in evaluators
        ]
    metric = matrix[0].metric
    rows = build_leaderboard(results, metric=metric)
    if len(results) > 1:  # a cross-architecture matrix: name each row's student
        students = {r.protocol_hash: r.student for r in results}
        for row in rows:
            row["method"] = f"{row['method']} · {students[row['protocol_hash']]}"
    title = f"{matrix[0].dataset} · protocol {results[0].protocol} · {metric}"
    console.print(leaderboard_table(rows, title=title))
    report_divergence(results)
    reporter.log(f"done in {time.perf_counter() - started:.1f} s")
    if args.json:
        payload = [r.to_dict() for r in results]
        _write_json(args.json, payload[0] if len(payload) == 1 else payload)
        reporter.log(f"wrote {args.json}")
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from ddrank.demo import DemoSettings, run_demo
    from ddrank.progress import Reporter
    from ddrank.report.html import render_html
    from ddrank.report.leaderboard import build_leaderboard
    from ddrank.report.render import leaderboard_table

    check_output(args.json, "--json")
    check_output(args.html, "--html")
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
        rows += [r.row() | {"labels": section} for r in results]
        title = f"digits · protocol {results[0].protocol}" + (" (quick)" if args.quick else "")
        console.print(leaderboard_table(build_leaderboard(results), title=f"{title} · {section} labels"))
    if "soft" in sections:
        _print(console, _gap_summary(sections))
    _print(console, f"{len(rows)} evaluations in {time.perf_counter() - started:.1f} s")
    if args.html is not None:
        html_path = Path(args.html)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        board = build_leaderboard(sections["hard"], metric="lrs")
        html_path.write_text(
            render_html(board, title="ddrank demo · digits · LRS (hard labels)"), encoding="utf-8"
        )
        _print(console, f"leaderboard: {html_path.resolve()}")
    if args.json:
        _write_json(args.json, rows)
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

    check_output(args.json, "--json")
    check_store(args)
    entries = load_sweep(args.file)
    missing = [e.name for e in entries if not e.images]
    if missing:
        raise InputError(
            f"sweep entries need images to run: {', '.join(missing[:3])}; plan them with ddrank plan"
        )
    base = settings_of(
        data_root=args.data_root,
        metric=args.metric,
        rounds=args.rounds,
        teacher_dir=args.teacher_dir,
        **engine_fields(args),
    )
    store = _store_for(args)
    rows = []
    with Reporter(enabled=not args.no_progress) as reporter:
        for entry in entries:
            evaluator = Evaluator(entry.settings(base), store=store, reporter=reporter)
            validated = evaluator.validate(load_synthetic(entry.images, entry.labels))
            for warning in validated.warnings:
                warn(f"{entry.name}: {warning.message}")
            result = evaluator.evaluate_sets({entry.method: validated})[0]
            rows.append(result.to_dict())
            report_divergence([result])
            score = evaluator.definition.score
            reporter.log(f"{entry.name}: {score.label} {100 * result.summaries[score.field].mean:.2f}%")
    if args.json:
        _write_json(args.json, rows)
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
        run = plan_evaluation(settings, syn, args.method)
    for line in plan_report(run, sizes, settings):
        _print(console, line)
    return 0


# -- teachers, baselines, listings -----------------------------------------------------------------


def cmd_teacher_train(args: argparse.Namespace, console: Console) -> int:
    from ddrank.data.real import load_real
    from ddrank.evaluation.teachers import train_teacher
    from ddrank.progress import Reporter
    from ddrank.protocols import load_protocol
    check_output(args.out, "--out")
    real = load_real(args.dataset, args.data_root)
    recipe = load_protocol(args.protocol or real.info.name, dataset=real.info.name).full_data
    updates = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
    recipe = recipe.model_copy(update=updates)
    device = settings_of(device=args.device).torch_device  # checked: a torch device that is available
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

    check_output(args.out, "--out")
    real = load_real(args.dataset, args.data_root)
    syn = generate(args.method, real, args.ipc, seed=args.seed)
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": syn.images, "labels": syn.labels}, args.out)
    except OSError as exc:
        raise InputError(f"cannot write --out {shown(args.out)}: {exc.strerror or one_line(exc)}") from exc
    console.print(
        f"wrote {args.out}: {tuple(syn.images.shape)} normalised images, class-major labels", highlight=False
    )
    return 0


def _listing(kind: str) -> Table:
    from ddrank.baselines import BASELINES
    from ddrank.data.real import DATASETS
    from ddrank.data.synthetic import FORMATS
    from ddrank.labels import list_losses
    from ddrank.models import describe_models
    from ddrank.protocols import preset, preset_names

    table = Table(title=kind, title_justify="left")
    table.add_column("name")
    if kind == "protocols":
        table.add_column("datasets")
        table.add_column("description")
        for name in preset_names():
            doc = preset(name)
            table.add_row(
                name, ", ".join(doc.get("datasets", [])), " ".join(doc.get("description", "").split())
            )
        return table
    table.add_column("description")
    rows = {
        "models": describe_models,
        "datasets": lambda: [(e.name, e.description) for e in DATASETS.entries()],
        "formats": lambda: [(e.name, e.description) for e in FORMATS.entries()],
        "baselines": lambda: [(e.name, e.description) for e in BASELINES.entries()],
        "losses": list_losses,
    }[kind]()
    for name, description in rows:
        table.add_row(name, description)
    return table


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    console.print(_listing(args.kind))
    return 0


def cmd_protocol_show(args: argparse.Namespace, console: Console) -> int:
    import yaml

    from ddrank.data.real import dataset_info
    from ddrank.protocols import load_protocol

    dataset = dataset_info(args.dataset).name if args.dataset else None
    proto = load_protocol(args.name, dataset=dataset, ipc=args.ipc)
    console.print(f"# {proto.name} v{proto.version}, hash {proto.content_hash()}", highlight=False)
    console.print(
        yaml.safe_dump(proto.model_dump(mode="json"), sort_keys=False), highlight=False, markup=False
    )
    return 0


# -- the results store -------------------------------------------------------------------------------


def _scope(dataset: str | None, ipc: int | None) -> str:
    return (f" on {dataset}" if dataset else "") + (f" at IPC {ipc}" if ipc is not None else "")


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from ddrank.evaluation import recorded_evaluations
    from ddrank.report.leaderboard import LeaderboardError, build_leaderboard
    from ddrank.report.render import leaderboard_table, render

    with open_store(args.store, must_exist=True, readonly=True) as store:
        evaluations = recorded_evaluations(store, dataset=args.dataset, ipc=args.ipc)
        source = store.path
    rows = build_leaderboard(evaluations, metric=args.metric, dataset=args.dataset, ipc=args.ipc)
    if not rows:
        raise LeaderboardError(
            f"no {args.metric} evaluations recorded in {source}{_scope(args.dataset, args.ipc)}"
        )
    if args.format == "table" and not args.out:
        console.print(leaderboard_table(rows))
        return 0
    out = args.out or ("leaderboard.html" if args.format == "html" else None)
    text = render(rows, args.format)
    if out is None:
        print(text, end="")
        return 0
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    _print(console, f"wrote {target.resolve()}")
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from ddrank.evaluation import recorded_evaluations
    from ddrank.metrics.definitions import metric_definition
    from ddrank.report.leaderboard import compare_methods

    with open_store(args.store, must_exist=True, readonly=True) as store:
        evaluations = recorded_evaluations(store, dataset=args.dataset, ipc=args.ipc)
    c = compare_methods(evaluations, args.a, args.b, metric=args.metric, dataset=args.dataset, ipc=args.ipc)
    r, label = c.result, metric_definition(c.metric).label
    level = 1.0 - r.confidence
    if r.p_value < level:
        better = c.method_a if r.mean_difference > 0 else c.method_b
        verdict = f"{better} scores higher (p < {level:g})"
    else:
        verdict = f"no significant difference at the {100 * level:g}% level"
    lines = [
        f"{c.method_a} − {c.method_b}: {label} on {c.dataset} IPC {c.ipc}, "
        f"{r.n} rounds matched by seed ({r.test})",
        f"mean difference {100 * r.mean_difference:+.2f} percentage points, "
        f"{100 * r.confidence:g}% CI [{100 * r.ci_low:+.2f}, {100 * r.ci_high:+.2f}], p = {r.p_value:.3g}",
        verdict,
    ]
    for line in lines:
        _print(console, line)
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    check_output(args.out, "--out")
    with open_store(args.store, must_exist=True, readonly=True) as store:
        rows = store.export(args.out)
        jobs, evaluations = store.job_count(), len(store.evaluations())
        source = store.path
    _print(
        console, f"exported {rows} rows ({jobs} jobs, {evaluations} evaluations) from {source} to {args.out}"
    )
    return 0


def cmd_import(args: argparse.Namespace, console: Console) -> int:
    with open_store(args.store, must_exist=False) as store:
        jobs, evaluations = store.import_(args.file)
        target = store.path
    _print(
        console, f"imported {jobs} new jobs and {evaluations} new evaluations from {args.file} into {target}"
    )
    return 0

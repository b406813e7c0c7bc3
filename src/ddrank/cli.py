"""The ``ddrank`` command: a thin layer over the public API."""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ddrank import __version__
from ddrank.errors import DDRankError

EXIT_USAGE = 2


def _write_json(path: str, payload: Any) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(target)


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


def _is_main() -> bool:
    from ddrank import distributed

    return distributed.world().main


def _store_for(args: argparse.Namespace) -> Any:
    """The results store a run records into: --store PATH, the default one, or none with --no-store."""
    if getattr(args, "no_store", False):
        return None
    return _results_store(args.store, must_exist=False)


def _engine_options(args: argparse.Namespace) -> Any:
    from ddrank.engine.options import EngineOptions

    fields = {"max_members": args.max_members}
    if getattr(args, "data_parallel_images", None) is not None:
        fields["data_parallel_images"] = args.data_parallel_images
    return EngineOptions(**fields)


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from ddrank.data.synthetic import load_synthetic
    from ddrank.evaluate import Evaluator
    from ddrank.progress import Reporter
    from ddrank.report.leaderboard import build_leaderboard, leaderboard_table

    settings = _evaluate_settings(args)
    syn = load_synthetic(
        args.images,
        args.labels,
        format=args.format,
        lr=args.lr,
        space=args.space,
        allow_pickle=args.allow_pickle,
    )
    store = _store_for(args)
    results = []
    with Reporter(enabled=not args.no_progress) as reporter:
        evaluators = []
        for protocol in settings["protocols"]:
            evaluator = Evaluator(
                settings["dataset"],
                protocol,
                metric=settings["metric"],
                data_root=settings["data_root"],
                rounds=settings["rounds"],
                seed=settings["seed"],
                weight=settings["weight"],
                real_acc=settings["real_acc"],
                teacher_dir=settings["teacher_dir"],
                teachers=args.teacher or (),
                backend=args.backend,
                device=args.device,
                precision=args.precision,
                options=_engine_options(args),
                cache=store,
                reporter=reporter,
            )
            validated = evaluator.validate(syn, ipc=settings["ipc"], resize=args.resize)
            evaluator.protocol_for(validated.ipc)  # fail on a bad protocol before any training
            evaluators.append((evaluator, validated))
        started = time.perf_counter()
        for evaluator, validated in evaluators:
            result = evaluator.evaluate_sets({args.method: validated})[0]
            if store is not None and _is_main():
                store.record_evaluation(result.to_dict())
            results.append(result)
    rows = build_leaderboard([r.to_dict() for r in results], metric=settings["metric"])
    for row, result in zip(rows, results, strict=True):
        row["method"] = f"{row['method']} · {result.protocol.model}" if len(results) > 1 else row["method"]
    title = f"{settings['dataset']} · protocol {results[0].protocol.name} · {settings['metric']}"
    console.print(leaderboard_table(rows, title=title))
    reporter.log(f"done in {time.perf_counter() - started:.1f} s")
    if args.json:
        payload = [r.to_dict() for r in results]
        _write_json(args.json, payload[0] if len(payload) == 1 else payload)
        reporter.log(f"wrote {args.json}")
    return 0


def _evaluate_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge a DD-Ranking --config with the command line (explicit flags win) and expand --students."""
    from ddrank.data.real import dataset_info
    from ddrank.protocols import load_protocol

    settings: dict[str, Any] = {
        "dataset": args.dataset,
        "data_root": args.data_root,
        "protocol": args.protocol,
        "ipc": args.ipc,
        "metric": args.metric,
        "rounds": args.rounds,
        "teacher_dir": args.teacher_dir,
        "weight": args.weight,
        "seed": args.seed,
        "real_acc": args.real_acc
        if args.real_acc in (None, "published")
        else _fraction(args.real_acc, "--real-acc"),
    }
    if args.config:
        from ddrank.compat.ddranking_config import translate_ddranking_config

        config = translate_ddranking_config(args.config, metric=args.metric)
        if args.protocol:
            raise DDRankError("give either --config (a DD-Ranking YAML) or --protocol, not both")
        from_config = {
            "dataset": config.dataset,
            "data_root": config.data_root,
            "protocol": config.protocol,
            "ipc": config.ipc,
            "metric": config.metric,
            "rounds": config.rounds,
            "teacher_dir": config.teacher_dir,
            "real_acc": config.real_acc,
            "weight": config.weight,
            "seed": config.seed,
        }
        settings = {k: v if v is not None else from_config[k] for k, v in settings.items()}
    settings["dataset"] = dataset_info(settings["dataset"] or "digits").name
    settings["metric"] = settings["metric"] or "lrs"
    settings["seed"] = 0 if settings["seed"] is None else settings["seed"]
    settings["weight"] = 0.5 if settings["weight"] is None else settings["weight"]
    protocol = settings["protocol"] or settings["dataset"]
    if args.students:
        base = (
            protocol
            if not isinstance(protocol, str)
            else load_protocol(protocol, dataset=settings["dataset"], ipc=settings["ipc"])
        )
        students = [s.strip() for s in args.students.split(",") if s.strip()]
        if not students:
            raise DDRankError("--students takes a comma-separated list of model names")
        settings["protocols"] = [base.with_overrides(model=s) for s in students]
    else:
        settings["protocols"] = [protocol]
    return settings


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from ddrank.demo import DemoSettings, run_demo
    from ddrank.progress import Reporter
    from ddrank.report.html import render_html
    from ddrank.report.leaderboard import build_leaderboard
    from ddrank.report.table import lrs_table

    settings = DemoSettings(
        quick=args.quick,
        seed=args.seed or 0,
        backend=args.backend,
        device=args.device,
        soft=not args.hard_only,
        options=_engine_options(args),
    )
    store = _store_for(args)
    started = time.perf_counter()
    with Reporter(enabled=not args.no_progress) as reporter:
        sections = run_demo(settings, reporter, cache=store)
    rows = []
    for section, results in sections.items():
        section_rows = [r.row() | {"labels": section} for r in results]
        rows += section_rows
        title = f"digits · protocol {results[0].protocol.name}" + (" (quick)" if args.quick else "")
        console.print(lrs_table(section_rows, title=f"{title} · {section} labels"))
        if store is not None and _is_main():
            for result in results:
                store.record_evaluation(result.to_dict())
    if "soft" in sections:
        console.print(_gap_summary(sections), highlight=False, markup=False)
    console.print(f"{len(rows)} evaluations in {time.perf_counter() - started:.1f} s", highlight=False)
    evaluations = [r.to_dict() for results in sections.values() for r in results]
    if args.html is None:
        return 0
    html_path = Path(args.html)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    hard = [e for e in evaluations if e["labels"] == "hard"]
    html_path.write_text(
        render_html(build_leaderboard(hard, metric="lrs"), title="ddrank demo · digits · LRS (hard labels)"),
        encoding="utf-8",
    )
    console.print(f"leaderboard: {html_path.resolve()}", highlight=False, markup=False)
    if args.json:
        _write_json(args.json, rows)
        console.print(f"wrote {args.json}", highlight=False)
    return 0


def _gap_summary(sections: dict[str, list[Any]]) -> str:
    """How much of the distilled sets' lead over random survives when students learn from a teacher."""
    lines = ["acc(syn) − acc(random subset) in percentage points, hard labels → teacher (soft) labels:"]
    for ipc in sorted({r.ipc for r in sections["hard"]}):
        hard = {r.method: r.row() for r in sections["hard"] if r.ipc == ipc}
        soft = {r.method: r.row() for r in sections["soft"] if r.ipc == ipc}
        parts = []
        for method in ("dm", "herding", "kcenter"):
            if method in hard and method in soft:
                parts.append(
                    f"{method} {100 * hard[method]['ior_mean']:+.1f} → {100 * soft[method]['ior_mean']:+.1f}"
                )
        lines.append(f"  IPC {ipc}: " + ", ".join(parts))
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    """Units, measured costs and the split over each world size, without training anything."""
    import torch

    from ddrank.engine.runner import max_members
    from ddrank.engine.units import make_units
    from ddrank.evaluate import Evaluator, _device
    from ddrank.planning import StepTimer, estimate_units, split

    sizes_w = _world_sizes(args.world_size)
    device = _device(args.device)
    options = _engine_options(args)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    if args.sweep:
        from ddrank.sweep import load_sweep, planned_jobs

        entries = load_sweep(args.sweep)
        jobs, set_sizes, eval_images = planned_jobs(
            entries,
            metric=args.metric or "lrs",
            rounds=args.rounds,
            precision=precision,
            published_real=args.real_acc == "published",
        )
        what = f"sweep {args.sweep}: {len(entries)} evaluations"
    else:
        from ddrank.data.synthetic import SyntheticSet, load_synthetic

        settings = _evaluate_settings(args)
        evaluator = Evaluator(
            settings["dataset"],
            settings["protocols"][0],
            metric=settings["metric"],
            data_root=settings["data_root"],
            rounds=settings["rounds"],
            seed=settings["seed"],
            real_acc=settings["real_acc"],
            device=device,
            precision=precision,
        )
        if args.images:
            syn = load_synthetic(args.images, args.labels, allow_pickle=args.allow_pickle)
        else:
            if settings["ipc"] is None:
                raise DDRankError(
                    "ddrank plan needs --images or --ipc (the synthetic set's images per class)"
                )
            info = evaluator.real.info
            n = info.num_classes * settings["ipc"]
            syn = SyntheticSet(
                torch.zeros(n, info.channels, info.size, info.size),
                None,
                None,
                "normalized",
                "<stand-in>",
                "tensor",
            )
        validated = evaluator.validate(syn, ipc=settings["ipc"])
        jobs, data, _ = evaluator.plan({args.method: validated}, dry_run=True)
        set_sizes = {name: len(t) for name, t in data.train_sets.items()}
        eval_images = data.test.images.shape[0] + next(iter(data.val_sets.values())).images.shape[0]
        protocol_name = evaluator.protocol_for(validated.ipc).name
        what = f"{settings['dataset']} · protocol {protocol_name} · IPC {validated.ipc}"
    limits: dict[tuple, int] = {}

    def limit(job, n):
        key = (job.spec, n)
        if key not in limits:
            limits[key] = max_members(job.spec, min(n, job.spec.batch_size), device, options)
        return limits[key]

    console.print(
        f"{what}: {len(jobs)} jobs; timing each kind of unit on {device} …", highlight=False, markup=False
    )
    timer = StepTimer(device, options)
    for world_size in sizes_w:
        units = make_units(
            jobs,
            set_sizes.__getitem__,
            backend=args.backend,
            member_limit=limit,
            data_parallel_images=options.data_parallel_images if world_size > 1 else None,
        )
        labels = [f"{u.jobs[0].spec.model} ×{len(u.jobs)}" for u in units]
        estimates = estimate_units(units, labels, timer, eval_images)
        shares, shared = split(estimates, world_size)
        loads = [shared + sum(e.seconds for e in share) for share in shares]
        total = sum(e.seconds for e in estimates)
        kinds = {k: sum(u.kind == k for u in units) for k in ("ensemble", "loop", "data_parallel")}
        console.print(
            f"world size {world_size}: {len(units)} units ({kinds['ensemble']} ensembles, "
            f"{kinds['loop']} single, {kinds['data_parallel']} data-parallel); estimated wall time "
            f"{_duration(max(loads))} (total work {_duration(total)}, idlest rank {_duration(min(loads))})",
            highlight=False,
            markup=False,
        )
        if world_size <= 8:
            for rank, (share, load) in enumerate(zip(shares, loads, strict=True)):
                jobs_here = sum(len(e.unit.jobs) for e in share)
                console.print(
                    f"  rank {rank}: {len(share)} units, {jobs_here} jobs, {_duration(load)}",
                    highlight=False,
                    markup=False,
                )
    return 0


def _world_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DDRankError(f"--world-size takes comma-separated positive integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise DDRankError(f"--world-size takes comma-separated positive integers, got {text!r}")
    return sizes


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_sweep(args: argparse.Namespace, console: Console) -> int:
    """Run every entry of a sweep file (each evaluation is distributed under torchrun)."""
    from ddrank.data.synthetic import load_synthetic
    from ddrank.evaluate import Evaluator
    from ddrank.progress import Reporter
    from ddrank.sweep import load_sweep

    entries = load_sweep(args.file)
    missing = [e.name for e in entries if not e.images]
    if missing:
        raise DDRankError(
            f"sweep entries need images to run: {', '.join(missing[:3])}; plan them with ddrank plan"
        )
    store = _store_for(args)
    rows = []
    with Reporter(enabled=not args.no_progress) as reporter:
        for entry in entries:
            evaluator = Evaluator(
                entry.dataset,
                entry.protocol or entry.method,
                metric=args.metric,
                data_root=args.data_root,
                rounds=args.rounds,
                seed=args.seed or 0,
                backend=args.backend,
                device=args.device,
                precision=args.precision,
                options=_engine_options(args),
                cache=store,
                reporter=reporter,
                teacher_dir=args.teacher_dir,
            )
            validated = evaluator.validate(load_synthetic(entry.images, entry.labels), ipc=entry.ipc)
            result = evaluator.evaluate_sets({entry.method: validated})[0]
            if store is not None and _is_main():
                store.record_evaluation(result.to_dict())
            rows.append(result.to_dict())
            reporter.log(f"{entry.name}: {args.metric} {100 * rows[-1][args.metric + '_mean']:.2f}%")
    if args.json:
        _write_json(args.json, rows)
    return 0


def cmd_teacher_train(args: argparse.Namespace, console: Console) -> int:
    from ddrank.data.real import load_real
    from ddrank.evaluate import _device
    from ddrank.labels.train import train_teacher
    from ddrank.progress import Reporter
    from ddrank.protocols import load_protocol

    real = load_real(args.dataset, args.data_root)
    recipe = load_protocol(args.protocol or real.info.name, dataset=real.info.name).full_data
    updates = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None}
    recipe = recipe.model_copy(update=updates)
    with Reporter(enabled=not args.no_progress) as reporter:
        trained = train_teacher(
            real, args.model, recipe, args.out, seed=args.seed, device=_device(args.device), reporter=reporter
        )
    console.print(
        f"wrote {trained.path}: {trained.model} on {real.info.name}, "
        f"test accuracy {100 * trained.test_acc:.2f}%",
        highlight=False,
        markup=False,
    )
    return 0


def cmd_baseline(args: argparse.Namespace, console: Console) -> int:
    import torch

    from ddrank.baselines import generate
    from ddrank.data.real import load_real

    real = load_real(args.dataset, args.data_root)
    syn = generate(args.method, real, args.ipc, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"images": syn.images, "labels": syn.labels}, args.out)
    console.print(
        f"wrote {args.out}: {tuple(syn.images.shape)} normalised images, class-major labels", highlight=False
    )
    return 0


def _results_store(path: str | None, *, must_exist: bool) -> Any:
    """The results store at ``path`` (default: the cache's); reading commands refuse a missing one."""
    from ddrank.paths import cache_dir
    from ddrank.store import ResultStore, StoreError

    target = Path(path) if path else cache_dir() / "results.sqlite"
    if must_exist and not target.exists():
        raise StoreError(f"no results store at {target}; record evaluations there first or pass --store PATH")
    return ResultStore(target)


def _scope(dataset: str | None, ipc: int | None) -> str:
    return (f" on {dataset}" if dataset else "") + (f" at IPC {ipc}" if ipc is not None else "")


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from ddrank.report.leaderboard import LeaderboardError, build_leaderboard, leaderboard_table, render

    with _results_store(args.store, must_exist=True) as store:
        evaluations = store.evaluations(dataset=args.dataset, ipc=args.ipc)
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
    console.print(f"wrote {target.resolve()}", highlight=False, markup=False)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from ddrank.report.leaderboard import METRICS, compare_methods

    with _results_store(args.store, must_exist=True) as store:
        evaluations = store.evaluations(dataset=args.dataset, ipc=args.ipc)
    c = compare_methods(evaluations, args.a, args.b, metric=args.metric, dataset=args.dataset, ipc=args.ipc)
    r, label = c.result, METRICS[c.metric].label
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
        console.print(line, highlight=False, markup=False)
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    with _results_store(args.store, must_exist=True) as store:
        rows = store.export(args.out)
        jobs, evaluations = store.job_count(), len(store.evaluations())
        source = store.path
    console.print(
        f"exported {rows} rows ({jobs} jobs, {evaluations} evaluations) from {source} to {args.out}",
        highlight=False,
        markup=False,
    )
    return 0


def cmd_import(args: argparse.Namespace, console: Console) -> int:
    with _results_store(args.store, must_exist=False) as store:
        jobs, evaluations = store.import_(args.file)
        target = store.path
    console.print(
        f"imported {jobs} new jobs and {evaluations} new evaluations from {args.file} into {target}",
        highlight=False,
        markup=False,
    )
    return 0


def _fraction(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DDRankError(f"{flag} takes a fraction in [0, 1] or 'published', got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        hint = (
            f" (accuracies are fractions, not percentages: {value:g}% is {value / 100:g})"
            if value > 1
            else ""
        )
        raise DDRankError(f"{flag} takes a fraction in [0, 1] or 'published', got {text!r}{hint}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    from ddrank.engine.runner import BACKENDS

    store_help = "results database (default: results.sqlite in the ddrank cache directory)"
    p.add_argument("--store", help=store_help + "; finished jobs are reused, so a rerun resumes")
    p.add_argument("--no-store", action="store_true", help="keep results in memory only")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="bf16 autocast on CUDA by default, fp32 on CPUs",
    )
    p.add_argument("--max-members", type=int, help="most students trained at once in one ensemble")
    p.add_argument(
        "--data-parallel-images",
        type=int,
        help="under torchrun, a job on at least this many images trains on every rank (default 500000)",
    )
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
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddrank",
        description="Fair, fast, reproducible evaluation of dataset distillation (HLR, IOR, LRS, ARS).",
        epilog="Accuracies and scores are fractions in [0, 1]; tables show them as percentages.",
    )
    parser.add_argument("--version", action="version", version=f"ddrank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ev = sub.add_parser(
        "evaluate",
        help="score a synthetic set: LRS (HLR, IOR), ARS or accuracy, with 95%% CIs",
        description="Score a synthetic set against random real subsets under one protocol.",
    )
    ev.add_argument("--dataset", help="real dataset (ddrank list datasets); default digits")
    ev.add_argument("--data-root", help="folder holding the real dataset (not needed for digits)")
    ev.add_argument(
        "--images",
        required=True,
        help="synthetic set: .pt tensor or dict, DATM/MTT folder, DC result file, .npz, image folder",
    )
    ev.add_argument(
        "--format", default="auto", help="format of --images (ddrank list formats); default: detected"
    )
    ev.add_argument(
        "--labels", help="labels file (.pt/.npy): [N] hard or [N, K] soft; default class-major order"
    )
    ev.add_argument("--ipc", type=int, help="images per class (checked against the set)")
    ev.add_argument(
        "--protocol", help="protocol preset or YAML file (ddrank list protocols); default: the dataset's"
    )
    ev.add_argument("--rounds", type=int, help="evaluation rounds (default: the protocol's)")
    ev.add_argument("--method", default="synthetic", help="name shown for this set in tables and JSON")
    ev.add_argument("--lr", type=float, help="the set's own learning rate (overrides one shipped with it)")
    ev.add_argument(
        "--space",
        choices=("pixel", "normalized", "zca"),
        help="what the image values are (default: the protocol's convention)",
    )
    ev.add_argument("--resize", action="store_true", help="resize images to the dataset's resolution")
    ev.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow .pt files that need full unpickling (can run code: trusted files only)",
    )
    ev.add_argument(
        "--real-acc", help="use this acc(real, hard) (a fraction) or 'published' instead of training it"
    )
    ev.add_argument("--weight", type=float, help="LRS weight w (IOR against HLR) or ARS γ; default 0.5")
    ev.add_argument("--metric", choices=("lrs", "ars", "acc"), help="lrs (default), ars, or plain accuracy")
    ev.add_argument(
        "--teacher",
        action="append",
        metavar="PATH",
        help="teacher checkpoint, once per teacher of the protocol, in its order",
    )
    ev.add_argument("--teacher-dir", help="folder of teachers laid out as DIR/<dataset>/<model>/ckpt_best.pt")
    ev.add_argument("--config", help="a DD-Ranking YAML configuration (translated into a protocol)")
    ev.add_argument(
        "--students", help="comma-separated student models: one evaluation each (a cross-architecture matrix)"
    )
    _add_run_options(ev)
    ev.set_defaults(run=cmd_evaluate)

    demo = sub.add_parser(
        "demo",
        help="score the reference baselines on the embedded digits data",
        description="Build noise/random/herding/k-center/DM sets on digits at IPC 1 and 10, score each "
        "with LRS over several rounds under hard labels and under a teacher's soft labels, print ranked "
        "tables and write an HTML leaderboard.",
    )
    demo.add_argument("--quick", action="store_true", help="fewer epochs, rounds and learning rates")
    demo.add_argument("--hard-only", action="store_true", help="skip the soft-label (teacher) section")
    demo.add_argument("--html", default="ddrank-demo.html", help="where to write the HTML leaderboard")
    _add_run_options(demo)
    demo.set_defaults(run=cmd_demo)

    ls = sub.add_parser(
        "list", help="list registered models, datasets, protocols, losses, formats or baselines"
    )
    ls.add_argument("kind", choices=("models", "datasets", "protocols", "losses", "formats", "baselines"))
    ls.set_defaults(run=cmd_list)

    proto = sub.add_parser("protocol", help="inspect protocol presets")
    proto_sub = proto.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = proto_sub.add_parser("show", help="print a resolved protocol and its content hash")
    show.add_argument("name")
    show.add_argument("--dataset", help="resolve the preset for this dataset")
    show.add_argument("--ipc", type=int, help="resolve the preset for this IPC")
    show.set_defaults(run=cmd_protocol_show)

    base = sub.add_parser(
        "baseline", help="write a reference synthetic set (noise, random, herding, kcenter, dm)"
    )
    base.add_argument("method")
    base.add_argument("--dataset", default="digits")
    base.add_argument("--data-root")
    base.add_argument("--ipc", type=int, required=True)
    base.add_argument("--seed", type=int, default=0)
    base.add_argument("--out", required=True, help="output .pt file (dict with images and labels)")
    base.set_defaults(run=cmd_baseline)

    plan = sub.add_parser(
        "plan",
        help="show how a run's jobs would split over W ranks and how long it would take, without training",
        description="Plan an evaluation (like ddrank evaluate) or a sweep (--sweep leaderboard|FILE.yaml): "
        "group its jobs into units, time each kind of unit for a few steps on this device, and print the "
        "split over each world size with the estimated wall time.",
    )
    plan.add_argument("--world-size", default="1", help="comma-separated world sizes, e.g. 1,8,64")
    plan.add_argument(
        "--sweep", help="'leaderboard' (every published protocol × dataset × IPC) or a sweep YAML"
    )
    plan.add_argument("--dataset")
    plan.add_argument("--data-root")
    plan.add_argument("--protocol")
    plan.add_argument("--ipc", type=int)
    plan.add_argument("--images", help="the synthetic set (default: a stand-in of the IPC's size)")
    plan.add_argument("--labels")
    plan.add_argument("--allow-pickle", action="store_true")
    plan.add_argument("--method", default="synthetic")
    plan.add_argument("--metric", choices=("lrs", "ars", "acc"))
    plan.add_argument("--rounds", type=int)
    plan.add_argument("--real-acc", help="'published' skips full-data jobs that have a published value")
    plan.add_argument("--config")
    plan.add_argument("--students")
    plan.add_argument("--teacher-dir")
    plan.add_argument("--weight", type=float)
    plan.add_argument("--seed", type=int)
    plan.add_argument("--backend", choices=("auto", "ensemble", "loop"), default="auto")
    plan.add_argument("--device", default=None)
    plan.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    plan.add_argument("--max-members", type=int)
    plan.set_defaults(run=cmd_plan)

    sweep = sub.add_parser("sweep", help="run every evaluation of a sweep file (distributed under torchrun)")
    sweep.add_argument("file", help="YAML list of entries: method, dataset, ipc, images[, labels, protocol]")
    sweep.add_argument("--data-root")
    sweep.add_argument("--metric", choices=("lrs", "ars", "acc"), default="lrs")
    sweep.add_argument("--rounds", type=int)
    sweep.add_argument("--teacher-dir")
    _add_run_options(sweep)
    sweep.set_defaults(run=cmd_sweep)

    teacher = sub.add_parser("teacher", help="train teacher checkpoints for soft-label protocols")
    teacher_sub = teacher.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = teacher_sub.add_parser(
        "train",
        help="train a teacher on the real training set with the full-data recipe",
        description="Train MODEL on the whole training set of DATASET with the full-data recipe of the "
        "dataset's protocol (or --protocol) and write a checkpoint with its test accuracy.",
    )
    train.add_argument("--dataset", required=True)
    train.add_argument("--data-root")
    train.add_argument("--model", required=True, help="teacher architecture (ddrank list models)")
    train.add_argument("--protocol", help="take the full-data recipe from this preset")
    train.add_argument("--epochs", type=int, help="override the recipe's epochs")
    train.add_argument("--lr", type=float, help="override the recipe's learning rate")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default=None)
    train.add_argument(
        "--out", required=True, help="checkpoint path, e.g. DIR/<dataset>/<model>/ckpt_best.pt"
    )
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(run=cmd_teacher_train)

    store_help = "results database (default: results.sqlite in the ddrank cache directory)"
    board = sub.add_parser(
        "leaderboard",
        help="rank recorded methods per dataset and IPC by LRS, ARS or accuracy, with CIs",
        description="Rank the recorded evaluations per dataset and IPC (newest of each method and protocol) "
        "and render them as a terminal table, Markdown, CSV, JSON or a self-contained HTML page.",
    )
    board.add_argument("--store", help=store_help)
    board.add_argument("--dataset", help="only this dataset")
    board.add_argument("--ipc", type=int, help="only this IPC")
    board.add_argument(
        "--metric", choices=("lrs", "ars", "acc"), default="lrs", help="ranking score (default lrs)"
    )
    board.add_argument(
        "--format", choices=("table", "md", "csv", "json", "html"), default="table", help="output format"
    )
    board.add_argument(
        "--out", help="write to this file (default: stdout; html writes leaderboard.html in the cwd)"
    )
    board.set_defaults(run=cmd_leaderboard)

    compare = sub.add_parser(
        "compare",
        help="paired comparison of two methods over their rounds with the same seeds",
        description="Mean difference A − B of a score over the rounds both methods ran with the same seed, "
        "with its 95%% CI and the p-value of a paired t-test.",
    )
    compare.add_argument("a", help="first method")
    compare.add_argument("b", help="second method")
    compare.add_argument("--store", help=store_help)
    compare.add_argument("--dataset", help="dataset (needed when both methods are evaluated on several)")
    compare.add_argument("--ipc", type=int, help="IPC (needed when both methods are evaluated at several)")
    compare.add_argument("--metric", choices=("lrs", "ars", "acc"), default="lrs", help="score (default lrs)")
    compare.set_defaults(run=cmd_compare)

    export = sub.add_parser("export", help="write every stored job and evaluation to a checksummed JSON file")
    export.add_argument("--out", required=True, help="export file (JSON)")
    export.add_argument("--store", help=store_help)
    export.set_defaults(run=cmd_export)

    imp = sub.add_parser("import", help="add the jobs and evaluations of an export file to the store")
    imp.add_argument("file", help="export file written by ddrank export")
    imp.add_argument("--store", help=store_help)
    imp.set_defaults(run=cmd_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ddrank import distributed

    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    prefix = "ddrank: error: "
    try:
        world = distributed.init_from_env(getattr(args, "device", None))
        if world.distributed:
            prefix = f"ddrank (rank {world.rank}): error: "
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
    except DDRankError as exc:
        print(prefix + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ddrank: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())

"""The main job on the embedded default: score the reference baselines on digits.

The baselines are scored with LRS under hard labels (the ``digits`` protocol) and, unless
switched off, under a teacher's soft labels (``digits-kd``: every augmented batch relabelled by
a ConvNet teacher trained on digits and cached) — the soft-label gap between random real images
and the distilled sets shrinks, which is what the DD-Ranking study observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddrank.baselines import generate
from ddrank.data.real import load_real
from ddrank.engine.job import JobCache, MemoryCache
from ddrank.evaluation import Evaluation, Evaluator
from ddrank.progress import Reporter
from ddrank.protocols import Protocol, load_protocol
from ddrank.settings import RunSettings

DEMO_METHODS = ("noise", "random", "herding", "kcenter", "dm")
DEMO_IPCS = (1, 10)
SECTIONS = {"hard": "digits", "soft": "digits-kd"}
# Relabelling every batch with the teacher roughly doubles a step's cost, so the soft-label
# section runs fewer rounds over the upper half of its lr grid (where its best runs lie).
SOFT_SECTION = {"rounds": 3, "lr_grid": (0.1, 0.3)}
# The quick demo distils DM for a third of its iterations: still ahead of random real images.
QUICK_BASELINES = {"dm": {"iterations": 100}}


@dataclass(frozen=True)
class DemoSettings:
    """Full demo: the digits presets as shipped; quick: fewer epochs, rounds and learning rates, and a
    shorter DM distillation.

    ``run`` holds the seed and how students train (backend, device, precision, engine options).
    """

    quick: bool = False
    soft: bool = True
    run: RunSettings = field(default_factory=RunSettings)

    def protocol(self, section: str) -> Protocol:
        proto = load_protocol(SECTIONS[section], dataset="digits")
        if section == "soft":
            proto = proto.with_overrides(**SOFT_SECTION)
        if self.quick:
            recipe = proto.full_data.model_copy(update={"epochs": 20})
            proto = proto.with_overrides(epochs=100, rounds=3, lr_grid=proto.lr_grid[-2:], full_data=recipe)
        return proto

    def section(self, section: str) -> RunSettings:
        """The run settings of a section: LRS on digits under the section's protocol."""
        return self.run.replace(dataset="digits", protocol=self.protocol(section), metric="lrs")


def run_demo(
    settings: DemoSettings, reporter: Reporter, store: JobCache | None = None
) -> dict[str, list[Evaluation]]:
    """Build each baseline at each IPC and score it with LRS over several rounds, per label section;
    a results store records every evaluation."""
    real = load_real("digits")
    results: dict[str, list[Evaluation]] = {}
    sets = {}
    store = MemoryCache() if store is None else store  # hard-label runs are shared by both sections
    seed = settings.run.seed
    for section in SECTIONS:
        if section == "soft" and not settings.soft:
            continue
        evaluator = Evaluator(settings.section(section), store=store, reporter=reporter)
        results[section] = []
        for ipc in DEMO_IPCS:
            if ipc not in sets:
                reporter.log(f"building {len(DEMO_METHODS)} reference sets at IPC {ipc}")
                options = QUICK_BASELINES if settings.quick else {}
                sets[ipc] = {m: generate(m, real, ipc, seed=seed, **options.get(m, {})) for m in DEMO_METHODS}
            validated = {m: evaluator.validate(syn, ipc=ipc) for m, syn in sets[ipc].items()}
            results[section] += evaluator.evaluate_sets(validated)
    return results

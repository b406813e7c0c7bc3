"""The main job on the embedded default: score the reference baselines on digits."""

from __future__ import annotations

from dataclasses import dataclass

from ddrank.baselines import generate
from ddrank.data.real import load_real
from ddrank.engine.runner import Backend
from ddrank.evaluate import Evaluation, Evaluator
from ddrank.progress import Reporter
from ddrank.protocols import load_protocol

DEMO_METHODS = ("noise", "random", "herding", "kcenter", "dm")
DEMO_IPCS = (1, 10)


@dataclass(frozen=True)
class DemoSettings:
    """Full demo: the digits preset as shipped; quick: fewer epochs, rounds and learning rates."""

    quick: bool = False
    seed: int = 0
    backend: Backend = "auto"
    device: str | None = None

    def protocol(self):
        proto = load_protocol("digits")
        if self.quick:
            proto = proto.with_overrides(
                epochs=100,
                rounds=3,
                lr_grid=[0.01, 0.1],
                full_data=proto.full_data.model_copy(update={"epochs": 20}),
            )
        return proto


def run_demo(settings: DemoSettings, reporter: Reporter) -> list[Evaluation]:
    """Build each baseline at each IPC and score it with LRS (hard labels) over several rounds."""
    protocol = settings.protocol()
    real = load_real("digits")
    evaluator = Evaluator(
        "digits",
        protocol,
        seed=settings.seed,
        backend=settings.backend,
        device=settings.device,
        reporter=reporter,
    )
    results: list[Evaluation] = []
    for ipc in DEMO_IPCS:
        reporter.log(f"building {len(DEMO_METHODS)} reference sets at IPC {ipc}")
        sets = {
            m: evaluator.validate(generate(m, real, ipc, seed=settings.seed), ipc=ipc) for m in DEMO_METHODS
        }
        results += evaluator.evaluate_sets(sets)
    return results

"""ddrank: fair, fast, reproducible evaluation of dataset distillation.

``ddrank.evaluate(images, ...)`` scores one synthetic set (LRS, ARS or accuracy);
:class:`ddrank.Evaluator` scores several at once under one :class:`ddrank.RunSettings`;
``ddrank.calibrate(...)`` checks the random-subset and whole-data baselines against published values.
The command line is ``ddrank``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Evaluation", "Evaluator", "RunSettings", "__version__", "calibrate", "evaluate"]

if TYPE_CHECKING:
    from ddrank.evaluation import Evaluation, Evaluator, calibrate, evaluate
    from ddrank.settings import RunSettings

# The public names load on first use, so that ``ddrank --help`` answers without importing torch.
_LAZY = {
    "Evaluation": "ddrank.evaluation",
    "Evaluator": "ddrank.evaluation",
    "evaluate": "ddrank.evaluation",
    "calibrate": "ddrank.evaluation",
    "RunSettings": "ddrank.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ddrank' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

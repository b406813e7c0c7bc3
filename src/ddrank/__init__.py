"""ddrank: fair, fast, reproducible evaluation of dataset distillation.

``ddrank.evaluate(images, ...)`` scores one synthetic set (LRS, ARS or accuracy);
:class:`ddrank.Evaluator` scores several at once under one :class:`ddrank.RunSettings`;
``ddrank.calibrate(...)`` checks the random-subset and whole-data baselines against published values.
The command line is ``ddrank``.

The public names are imported on first use, so that the command line can install its signal
handlers before torch loads (Ctrl-C during start-up is then one line, not a traceback).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Evaluation": "ddrank.evaluation",
    "Evaluator": "ddrank.evaluation",
    "evaluate": "ddrank.evaluation",
    "calibrate": "ddrank.evaluation",
    "RunSettings": "ddrank.settings",
}

if TYPE_CHECKING:
    from ddrank.evaluation import Evaluation, Evaluator, calibrate, evaluate
    from ddrank.settings import RunSettings

__all__ = ["Evaluation", "Evaluator", "RunSettings", "__version__", "calibrate", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ddrank' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

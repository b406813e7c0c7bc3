"""ddrank: fair, fast, reproducible evaluation of dataset distillation.

``ddrank.evaluate(images, ...)`` scores one synthetic set (LRS, ARS or accuracy);
:class:`ddrank.Evaluator` scores several at once under one :class:`ddrank.RunSettings`;
``ddrank.calibrate(...)`` checks the random-subset and whole-data baselines against published values.
The command line is ``ddrank``.
"""

__version__ = "0.1.0"

from ddrank.evaluation import Evaluation, Evaluator, calibrate, evaluate  # noqa: E402
from ddrank.settings import RunSettings  # noqa: E402

__all__ = ["Evaluation", "Evaluator", "RunSettings", "__version__", "calibrate", "evaluate"]

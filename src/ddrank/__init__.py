"""ddrank: fair, fast, reproducible evaluation of dataset distillation.

``ddrank.evaluate(images, ...)`` scores one synthetic set (LRS, ARS or accuracy);
:class:`ddrank.Evaluator` scores several at once. The command line is ``ddrank``.
"""

__version__ = "0.1.0"

from ddrank import evaluate  # noqa: E402  (a callable module: ddrank.evaluate(...) scores a set)
from ddrank.evaluate import Evaluation, Evaluator  # noqa: E402

__all__ = ["Evaluation", "Evaluator", "__version__", "evaluate"]

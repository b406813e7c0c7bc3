"""Evaluating synthetic sets: settings → plan → train → score → record.

``evaluate`` scores one set; :class:`Evaluator` scores several at once so that shared work (random
subsets, the full-data baseline, teacher labels) is planned and trained once. Results are
:class:`Evaluation` objects whose ``to_dict`` / ``from_dict`` form is the one result schema.
"""

from ddrank.evaluation.evaluator import Evaluator, calibrate, evaluate
from ddrank.evaluation.results import Evaluation, RoundResult, Run, recorded_evaluations

__all__ = [
    "Evaluation",
    "Evaluator",
    "RoundResult",
    "Run",
    "calibrate",
    "evaluate",
    "recorded_evaluations",
]

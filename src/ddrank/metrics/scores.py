"""The DD-Ranking scores, on accuracies given as fractions in [0, 1].

The published reference feeds percentages into ``exp``; here every input and output is a
fraction, so LRS and ARS lie in [0, 1] (multiply by 100 only for display).
"""

from __future__ import annotations

import math

from ddrank.errors import InputError

_E, _E_INV = math.e, math.exp(-1.0)
# The weight w of LRS (IOR against HLR) and γ of ARS (with against without augmentation) unless one is given.
DEFAULT_WEIGHT = 0.5


def _check_fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> float:
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        hint = " (ddrank takes fractions, not percentages)" if abs(value) > 1 else ""
        raise InputError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}{hint}")
    return value


def _check_weight(name: str, weight: float) -> float:
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"{name} must lie in [0, 1], got {weight!r}")
    return weight


def _rescaled_exp(x: float) -> float:
    """Map x in [-1, 1] monotonically onto [0, 1]: (e^x - e^-1) / (e - e^-1)."""
    return (math.exp(x) - _E_INV) / (_E - _E_INV)


# LRS and ARS at a = 0 and b = 0. For ARS that is a set exactly as good as a random real subset with and
# without augmentation: no better than random. For LRS it is a set whose improvement over random exactly
# offsets its hard-label gap (w·IOR = (1 - w)·HLR); a random real subset has IOR = 0 but HLR > 0 (the full
# data beats it with hard labels), so it scores below this point, not at it.
NEUTRAL_SCORE = (1.0 - _E_INV) / (_E - _E_INV)


def hard_label_recovery(acc_real_hard: float, acc_syn_hard: float) -> float:
    """HLR = acc(real, hard) - acc(syn, hard); lower is better."""
    return _check_fraction("acc(real, hard)", acc_real_hard) - _check_fraction("acc(syn, hard)", acc_syn_hard)


def improvement_over_random(acc_syn: float, acc_random: float) -> float:
    """IOR = acc(syn, P) - acc(rand, P); higher is better."""
    return _check_fraction("acc(syn, P)", acc_syn) - _check_fraction("acc(rand, P)", acc_random)


def label_robust_score(hlr: float, ior: float, weight: float = DEFAULT_WEIGHT) -> float:
    """LRS in [0, 1] from a = w * IOR - (1 - w) * HLR."""
    w = _check_weight("weight", weight)
    hlr = _check_fraction("HLR", hlr, -1.0, 1.0)
    ior = _check_fraction("IOR", ior, -1.0, 1.0)
    return _rescaled_exp(w * ior - (1.0 - w) * hlr)


def augmentation_robust_score(gap_aug: float, gap_noaug: float, weight: float = DEFAULT_WEIGHT) -> float:
    """ARS in [0, 1] from b = γ * (syn - rand with aug) + (1 - γ) * (syn - rand without aug)."""
    g = _check_weight("weight", weight)
    gap_aug = _check_fraction("gap with augmentation", gap_aug, -1.0, 1.0)
    gap_noaug = _check_fraction("gap without augmentation", gap_noaug, -1.0, 1.0)
    return _rescaled_exp(g * gap_aug + (1.0 - g) * gap_noaug)

"""Training-time augmentation that runs batched on the device."""

from ddrank.augment.dc_augment import DCAugment
from ddrank.augment.dsa import DEFAULT_STRATEGY, DSA, FAMILIES, DSAParams, dsa_from_spec
from ddrank.augment.mix import Mix, MixResult, symmetric_beta
from ddrank.augment.transforms import (
    TRANSFORMS,
    Compose,
    PatchShuffle,
    RandomHorizontalFlip,
    RandomResizedCrop,
    transforms_from_spec,
)
from ddrank.augment.zca import ZCA

__all__ = [
    "DEFAULT_STRATEGY",
    "DSA",
    "FAMILIES",
    "TRANSFORMS",
    "ZCA",
    "Compose",
    "DCAugment",
    "DSAParams",
    "Mix",
    "MixResult",
    "PatchShuffle",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "dsa_from_spec",
    "symmetric_beta",
    "transforms_from_spec",
]

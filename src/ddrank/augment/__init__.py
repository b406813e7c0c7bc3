"""Training-time augmentation that runs batched on the device."""

from ddrank.augment.dsa import DEFAULT_STRATEGY, DSA, FAMILIES, DSAParams, dsa_from_spec

__all__ = ["DEFAULT_STRATEGY", "DSA", "FAMILIES", "DSAParams", "dsa_from_spec"]

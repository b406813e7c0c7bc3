"""Labels for training students: targets and the registered losses."""

from ddrank.labels.losses import LOSSES, LossFunction, Target, TargetKind, get_loss, list_losses

__all__ = ["LOSSES", "LossFunction", "Target", "TargetKind", "get_loss", "list_losses"]

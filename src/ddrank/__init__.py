"""ddrank: fair, fast, reproducible evaluation of dataset distillation."""

__version__ = "0.1.0"

"""The model registry: name parsing, construction, and checked checkpoint loading.

Each family module registers a :class:`ModelFamily` in :data:`MODELS`. A family turns a full
name (``"ConvNet-4-BN"``) into a :class:`ModelSpec` holding the canonical spelling and a
constructor taking ``(channels, num_classes, size)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from ddrank.errors import CheckpointError, InputError, UnknownNameError
from ddrank.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: its canonical spelling and a ``(channels, num_classes, size)`` constructor."""

    name: str
    build: Callable[[int, int, int], nn.Module]


@dataclass(frozen=True)
class ModelFamily:
    """How one architecture family is spelled, listed and parsed."""

    pattern: str
    examples: tuple[str, ...] | Callable[[], tuple[str, ...]]  # a function: listed on first use
    parse: Callable[[str], ModelSpec | None]

    def example_names(self) -> tuple[str, ...]:
        return self.examples() if callable(self.examples) else self.examples


MODELS: Registry[ModelFamily] = Registry("model family")

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN_PROBLEMS = 5


def fixed_name(
    canonical: str, build: Callable[[int, int, int], nn.Module]
) -> Callable[[str], ModelSpec | None]:
    """A parser for a family with a single, parameter-free name (matched case-insensitively)."""

    def parse(name: str) -> ModelSpec | None:
        return ModelSpec(canonical, build) if name.lower() == canonical.lower() else None

    return parse


def model_spec(name: str) -> ModelSpec:
    """Parse ``name`` with the first family that accepts it; raises UnknownNameError."""
    stripped = name.strip()
    for entry in MODELS.entries():
        spec = entry.value.parse(stripped)
        if spec is not None:
            return spec
    raise UnknownNameError("model", name, model_names())


def canonical_model_name(name: str) -> str:
    """The normalised spelling of a model name (e.g. ``"convnetd3"`` -> ``"ConvNet-3"``)."""
    return model_spec(name).name


def create_model(name: str, channels: int, num_classes: int, size: int) -> nn.Module:
    """Build model ``name`` for ``channels`` x ``size`` x ``size`` images, initialised from the global RNG."""
    for label, value in (("channels", channels), ("num_classes", num_classes), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{label} must be a positive integer, got {value!r}")
    return model_spec(name).build(channels, num_classes, size)


def model_names() -> list[str]:
    """Every concrete model name, families with parameters represented by their canonical examples."""
    return [example for entry in MODELS.entries() for example in entry.value.example_names()]


def describe_models() -> list[tuple[str, str]]:
    """(name pattern, description) for each family, for listings."""
    return [(entry.value.pattern, entry.description) for entry in MODELS.entries()]


def uses_batchnorm(model: nn.Module) -> bool:
    """Whether any batch-norm layer (with running statistics and batch coupling) is present."""
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def _unwrapped(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """Drop the key prefix added by DataParallel / DDP (``module.``) or torch.compile (``_orig_mod.``)."""
    for prefix in _WRAPPER_PREFIXES:
        wrapped = bool(state) and all(isinstance(key, str) and key.startswith(prefix) for key in state)
        if wrapped and not any(key.startswith(prefix) for key in expected):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _shape(value: object) -> str:
    return str(list(value.shape)) if isinstance(value, Tensor) else f"a {type(value).__name__}, not a tensor"


def load_state_dict_checked(model: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Strictly load ``state`` into ``model``; a mismatch raises CheckpointError naming keys and shapes."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {source} is a {type(state).__name__}, not a state dict of tensors")
    expected = model.state_dict()
    state = dict(_unwrapped(state, expected))
    problems = []
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):  # absent from checkpoints written by older torch
                state[key] = tensor
            else:
                problems.append(f"missing {key} (expected {list(tensor.shape)})")
        elif not isinstance(state[key], Tensor) or state[key].shape != tensor.shape:
            problems.append(f"{key}: expected {list(tensor.shape)}, found {_shape(state[key])}")
    problems += [
        f"unexpected {key!s} (found {_shape(value)})" for key, value in state.items() if key not in expected
    ]
    if problems:
        more = len(problems) - _SHOWN_PROBLEMS
        shown = "; ".join(problems[:_SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        raise CheckpointError(
            f"checkpoint {source} does not fit {type(model).__name__} ({len(problems)} problems): {shown}"
        )
    model.load_state_dict(state, strict=True)

"""Any torchvision classification model as ``torchvision:<name>``, adapted to small images and channel counts.

Models are built untrained (``weights=None``). For images of at most 64 px the stem stops
downsampling: ResNet-style models get a 3x3 stride-1 ``conv1`` and no ``maxpool`` (the form
SRe2L / RDED / DD-Ranking use), and other convolutional stems get stride 1. Patchify stems
(ViT, Swin, ConvNeXt: kernel equal to stride) are kept. A model that still cannot take the
requested input raises InputError when it is created, not in the middle of training.
"""

from __future__ import annotations

import functools
import itertools

import torch
from torch import nn

from ddrank.errors import InputError
from ddrank.models.registry import MODELS, ModelFamily, ModelSpec

PREFIX = "torchvision:"
SMALL_IMAGE_MAX = 64


@functools.cache
def architectures() -> tuple[str, ...]:
    """torchvision's classification builders (torchvision is imported here, on first use, not at start-up)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _builder_options(arch: str, size: int) -> dict[str, object]:
    """Constructor options beyond ``weights`` / ``num_classes``: no auxiliary heads, the real input size."""
    if arch in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    if arch.startswith("vit_"):
        return {"image_size": size}
    if arch.startswith("maxvit_"):
        return {"input_size": (size, size)}
    return {}


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The stem convolution: the first Conv2d in module order, with its dotted path."""
    return next((path, module) for path, module in model.named_modules() if isinstance(module, nn.Conv2d))


def _with_in_channels(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """A freshly initialised copy of ``conv`` that takes ``channels`` input channels."""
    return nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )


def _adapt_small_images(model: nn.Module) -> None:
    """Keep full resolution through the stem: no stride (3x3 stride-1 conv1 for ResNets), no max-pool."""
    import torchvision

    path, conv = _first_conv(model)
    if isinstance(model, torchvision.models.ResNet):
        model.set_submodule(path, nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=False))
    elif conv.kernel_size != conv.stride:
        conv.stride = (1, 1)
    if isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()


_UNUSABLE_INPUT = (RuntimeError, ValueError, AssertionError, IndexError)


def _unusable(arch: str, channels: int, size: int, error: Exception) -> InputError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InputError(f"{PREFIX}{arch} cannot take {channels}x{size}x{size} images: {reason}")


# (arch, channels, num_classes, size) whose forward pass already ran on meta tensors: each build after
# the first skips the check (a ResNet's costs about a third of a second).
_USABLE: set[tuple[str, int, int, int]] = set()


def _check_input(model: nn.Module, arch: str, channels: int, size: int) -> None:
    """Run the forward pass on meta tensors (no compute, no memory) to reject unusable input sizes early."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    meta = {key: torch.empty_like(value, device="meta") for key, value in tensors}
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.func.functional_call(model, meta, (torch.empty(1, channels, size, size, device="meta"),))
    except _UNUSABLE_INPUT as error:
        raise _unusable(arch, channels, size, error) from error
    finally:
        model.train(training)


def build_torchvision(arch: str, channels: int, num_classes: int, size: int) -> nn.Module:
    """Build torchvision's ``arch`` untrained, with the small-image stem and channel adaptations."""
    import torchvision

    try:
        model = torchvision.models.get_model(
            arch, weights=None, num_classes=num_classes, **_builder_options(arch, size)
        )
    except _UNUSABLE_INPUT as error:  # ViT / MaxViT check the image size when they are built
        raise _unusable(arch, channels, size, error) from error
    if size <= SMALL_IMAGE_MAX:
        _adapt_small_images(model)
    if channels != 3:
        path, conv = _first_conv(model)
        model.set_submodule(path, _with_in_channels(conv, channels))
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    if (arch, channels, num_classes, size) not in _USABLE:
        _check_input(model, arch, channels, size)
        _USABLE.add((arch, channels, num_classes, size))
    return model


def parse_torchvision(name: str) -> ModelSpec | None:
    """Parse ``torchvision:<builder name>`` for any classification builder in ``torchvision.models``."""
    lowered = name.lower()
    if not lowered.startswith(PREFIX) or lowered[len(PREFIX) :] not in architectures():
        return None
    arch = lowered[len(PREFIX) :]

    def build(channels: int, num_classes: int, size: int) -> nn.Module:
        return build_torchvision(arch, channels, num_classes, size)

    return ModelSpec(PREFIX + arch, build)


MODELS.register(
    "torchvision",
    description="any torchvision classification model, untrained; 3x3 stride-1 stem for images up to 64 px",
)(
    ModelFamily(
        pattern="torchvision:<name>",
        examples=lambda: tuple(PREFIX + arch for arch in architectures()),
        parse=parse_torchvision,
    )
)

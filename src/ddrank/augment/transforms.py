"""Torchvision-style training transforms (SRe2L / RDED / EDC / DD-Ranking pipelines), batched and keyed.

Each transform maps ``x [K, B, C, H, W]`` and one int64 key per member to augmented images with
per-sample parameters drawn from that member's key alone, with no per-sample Python and no host
synchronisation, so a member's output is bit-identical alone or inside an ensemble.
:func:`transforms_from_spec` builds a :class:`Compose` from a protocol's list of steps.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrank import rng
from ddrank.errors import ConfigError, InputError
from ddrank.registry import Registry

_CROP_STREAM, _FLIP_STREAM, _SHUFFLE_STREAM, _COMPOSE_STREAM = 0x7C30, 0x7C31, 0x7C32, 0x7C33
_PAD_CROP_STREAM, _NOISE_STREAM = 0x7C34, 0x7C35
# torchvision's RandomResizedCrop tries 10 random boxes before falling back to a centre crop.
_ATTEMPTS = 10


class Transform(Protocol):
    def __call__(self, x: Tensor, key: Tensor) -> Tensor: ...


TRANSFORMS: Registry[type] = Registry("transform")


@TRANSFORMS.register(
    "random_resized_crop", aliases=("resized_crop", "rrc"), description="torchvision RandomResizedCrop"
)
class RandomResizedCrop:
    """torchvision's ``RandomResizedCrop``: a random box per sample, resampled to ``size``.

    Boxes follow torchvision's sampling: area fraction ~ U(scale), log aspect ratio ~ U(log ratio),
    sides rounded to integers, the first of 10 attempts that fits the image is taken at a uniformly
    random position, else the centre crop clamped to the ratio range. Resampling is bilinear
    (``grid_sample``, align_corners=False) within the box, as torchvision crops and then interpolates,
    without antialiasing. ``size`` None keeps the input size.
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
    ):
        self.size = _pair("size", size) if size is not None else None
        self.scale = _range("scale", scale)
        self.ratio = _range("ratio", ratio)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"

    def boxes(self, key: Tensor, batch: int, height: int, width: int) -> Tensor:
        """Boxes ``[K, B, 4]`` as int64 (top, left, height, width), drawn as torchvision draws them."""
        u = rng.uniform(rng.fold(key, _CROP_STREAM), 4, _ATTEMPTS, batch).double()
        area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0])
        low, high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(low + (high - low) * u[:, 1])
        w = torch.round(torch.sqrt(area * aspect)).long()
        h = torch.round(torch.sqrt(area / aspect)).long()
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        top = (u[:, 2] * (height - h + 1)).long().clamp(max=height - h)
        left = (u[:, 3] * (width - w + 1)).long().clamp(max=width - w)
        drawn = torch.stack([top, left, h, w], dim=-1)  # [K, attempts, B, 4]
        first = fits.int().argmax(1, keepdim=True)  # index of the first fitting attempt
        chosen = torch.take_along_dim(drawn, first[..., None], dim=1)[:, 0].unbind(-1)
        fitted = fits.any(1)
        centre = self._centre_box(height, width)
        return torch.stack([torch.where(fitted, c, f) for c, f in zip(chosen, centre, strict=True)], dim=-1)

    def _centre_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """torchvision's fallback: the whole image, narrowed to the nearest allowed aspect ratio."""
        h, w = height, width
        if width / height < self.ratio[0]:
            h = int(round(width / self.ratio[0]))
        elif width / height > self.ratio[1]:
            w = int(round(height * self.ratio[1]))
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        """Crop every sample to its box and resize it to ``size``."""
        key = _checked(x, key, "RandomResizedCrop")
        K, B, C, H, W = x.shape
        out_h, out_w = self.size or (H, W)
        top, left, h, w = self.boxes(key, B, H, W).unbind(-1)
        # Output pixel q samples the input at pixel-centre coordinate left + (q + 0.5) w / out_w - 0.5,
        # clamped to the box's first and last pixel centres (torchvision crops, then interpolates, so
        # nothing outside the box is read), written in grid_sample's normalised coordinates
        # (align_corners=False).
        xs = _box_coordinates(left, w, out_w, W)
        ys = _box_coordinates(top, h, out_h, H)
        grid = torch.stack(torch.broadcast_tensors(xs[:, :, None, :], ys[:, :, :, None]), dim=-1)
        work = x.float() if x.element_size() < 4 else x
        out = F.grid_sample(
            work.flatten(0, 1),
            grid.flatten(0, 1).to(work.dtype),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        return out.view(K, B, C, out_h, out_w).to(x.dtype)


def _box_coordinates(start: Tensor, side: Tensor, out: int, full: int) -> Tensor:
    """``[K, B, out]`` normalised sampling coordinates of an ``out``-pixel resize of the boxes
    ``[start, start + side)`` along an axis of ``full`` pixels, each kept within its box."""
    q = torch.arange(out, device=start.device, dtype=torch.float64) + 0.5
    start, side = start[..., None].double(), side[..., None].double()
    pixel = torch.minimum(torch.maximum(start + q * side / out - 0.5, start), start + side - 1)
    return (2 * pixel + 1) / full - 1


@TRANSFORMS.register(
    "flip", aliases=("horizontal_flip", "random_horizontal_flip"), description="horizontal flip"
)
class RandomHorizontalFlip:
    """Mirror each sample left-right with probability ``p`` (exact pixel moves)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"flip probability p must lie in [0, 1], got {p}")
        self.p = p

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        key = _checked(x, key, "RandomHorizontalFlip")
        flip = rng.uniform(rng.fold(key, _FLIP_STREAM), x.shape[1]) < self.p
        return torch.where(flip[:, :, None, None, None], x.flip(-1), x)


@TRANSFORMS.register("patch_shuffle", aliases=("shuffle_patches",), description="RDED/EDC ShufflePatches")
class PatchShuffle:
    """RDED / EDC ``ShufflePatches(factor=grid)``: permute a grid×grid split of each sample.

    As in the reference, each sample's ``grid`` column strips are permuted at random, then its
    ``grid`` row strips, independently: patch (r, c) of the output is patch (σ(r), τ(c)) of the
    input. When a side is not a multiple of ``grid``, its last ``side % grid`` rows (columns) keep
    their position (the reference drops them and returns a smaller image).
    """

    def __init__(self, grid: int = 2):
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ConfigError(f"patch_shuffle grid must be a positive integer, got {grid!r}")
        self.grid = grid

    def __repr__(self) -> str:
        return f"PatchShuffle(grid={self.grid})"

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        key = _checked(x, key, "PatchShuffle")
        K, B, C, H, W = x.shape
        if min(H, W) < self.grid:
            raise InputError(
                f"PatchShuffle with grid {self.grid} needs images of at least {self.grid} pixels a side"
            )
        order = rng.bits(rng.fold(key, _SHUFFLE_STREAM), 2 * B * self.grid).view(K, 2, B, self.grid)
        strips = torch.sort(order, dim=-1, stable=True).indices  # [K, 2, B, grid]: rows, then columns
        rows = _strip_sources(strips[:, 0], H, self.grid)
        cols = _strip_sources(strips[:, 1], W, self.grid)
        x = torch.take_along_dim(x, rows[:, :, None, :, None], dim=3)
        return torch.take_along_dim(x, cols[:, :, None, None, :], dim=4)


@TRANSFORMS.register("random_crop", description="torchvision RandomCrop with padding")
class RandomCrop:
    """torchvision's ``RandomCrop(size, padding)``: pad every side by ``padding`` with ``fill``, then
    crop ``size`` at a uniformly random position (each offset in [0, 2 * padding]).

    Transforms here run on images in the training space, so ``fill`` is the padding value in that
    space: one number, or one per channel (torchvision's default black pixel is ``-mean / std``
    after normalisation). ``size`` None keeps the input size.
    """

    def __init__(
        self, size: int | Sequence[int] | None = None, padding: int = 0, fill: float | Sequence[float] = 0.0
    ):
        self.size = _pair("size", size) if size is not None else None
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= 1024:
            raise ConfigError(f"random_crop padding must be an integer in [0, 1024], got {padding!r}")
        self.padding = padding
        values = [fill] if isinstance(fill, int | float) else list(fill)
        if not values or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ConfigError(f"random_crop fill must be a finite number or one per channel, got {fill!r}")
        self.fill = tuple(float(v) for v in values)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding}, fill={self.fill})"

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        key = _checked(x, key, "RandomCrop")
        K, B, C, H, W = x.shape
        out_h, out_w = self.size or (H, W)
        p = self.padding
        if out_h > H + 2 * p or out_w > W + 2 * p:
            raise InputError(f"RandomCrop of {out_h}x{out_w} does not fit {H}x{W} images padded by {p}")
        if len(self.fill) not in (1, C):
            raise InputError(f"RandomCrop fill has {len(self.fill)} values for {C}-channel images")
        fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device).expand(C).view(1, 1, C, 1, 1)
        padded = fill.expand(K, B, C, H + 2 * p, W + 2 * p).clone()
        padded[..., p : p + H, p : p + W] = x
        top = rng.randint(rng.fold(key, _PAD_CROP_STREAM), 0, H + 2 * p - out_h + 1, B)
        left = rng.randint(rng.fold(key, _PAD_CROP_STREAM, 1), 0, W + 2 * p - out_w + 1, B)
        rows = (top[..., None] + torch.arange(out_h, device=x.device))[:, :, None, :, None]
        cols = (left[..., None] + torch.arange(out_w, device=x.device))[:, :, None, None, :]
        out = torch.take_along_dim(padded, rows.expand(K, B, C, out_h, 1), dim=3)
        return torch.take_along_dim(out, cols.expand(K, B, C, out_h, out_w), dim=4)


@TRANSFORMS.register("gaussian_noise", description="torchvision v2 GaussianNoise")
class GaussianNoise:
    """torchvision's ``v2.GaussianNoise(mean, sigma, clip)``: add ``mean + sigma * N(0, 1)`` per pixel
    (then clamp to [0, 1] when ``clip``), drawn from each member's key."""

    def __init__(self, mean: float = 0.0, sigma: float = 0.1, clip: bool = True):
        if not (math.isfinite(mean) and math.isfinite(sigma) and sigma >= 0):
            raise ConfigError(f"gaussian_noise needs a finite mean and sigma >= 0, got {mean!r}, {sigma!r}")
        self.mean, self.sigma, self.clip = float(mean), float(sigma), bool(clip)

    def __repr__(self) -> str:
        return f"GaussianNoise(mean={self.mean}, sigma={self.sigma}, clip={self.clip})"

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        key = _checked(x, key, "GaussianNoise")
        u = rng.uniform(rng.fold(key, _NOISE_STREAM), 2, x[0].numel()).double()
        # Box-Muller: one standard normal per pixel from two uniforms in (0, 1].
        normal = torch.sqrt(-2.0 * torch.log1p(-u[:, 0])) * torch.cos(2 * math.pi * u[:, 1])
        out = x + (self.mean + self.sigma * normal).view(x.shape).to(x.dtype)
        return out.clamp(0.0, 1.0) if self.clip else out


class Compose:
    """Apply transforms in order, the i-th with its own sub-key of each member's key."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = tuple(transforms)

    def __repr__(self) -> str:
        return f"Compose({list(self.transforms)})"

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        for i, transform in enumerate(self.transforms):
            x = transform(x, rng.fold(key, _COMPOSE_STREAM, i))
        return x


def transforms_from_spec(spec: Sequence[dict[str, Any]] | None) -> Compose | None:
    """Build the pipeline for steps like ``[{"name": "random_resized_crop", "scale": [0.5, 1]}, ...]``.

    None or an empty list means no transform. Unknown names raise UnknownNameError; bad
    parameters raise ConfigError.
    """
    if not spec:
        return None
    steps = []
    for i, step in enumerate(spec):
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise ConfigError(f"transform step {i} must be a mapping with a 'name', got {step!r}")
        params = {k: v for k, v in step.items() if k != "name"}
        cls = TRANSFORMS.get(step["name"])
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ConfigError(
                f"transform {TRANSFORMS.canonical(step['name'])!r} has no parameter "
                f"{', '.join(map(repr, unknown))}; it takes {', '.join(accepted)}"
            )
        try:
            steps.append(cls(**params))
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"transform {step['name']!r}: bad parameters {params}: {exc}") from exc
    return Compose(steps)


def _checked(x: Tensor, key: Tensor, name: str) -> Tensor:
    if x.dim() != 5 or not x.is_floating_point():
        raise InputError(f"{name} expects float images [K, B, C, H, W], got {x.dtype} {tuple(x.shape)}")
    if key.dim() != 1 or key.dtype != torch.int64 or key.shape[0] != x.shape[0]:
        raise InputError(
            f"{name} expects one int64 key per member, shape [{x.shape[0]}]; "
            f"got {key.dtype} {tuple(key.shape)}"
        )
    return key.to(x.device)


def _strip_sources(order: Tensor, n: int, grid: int) -> Tensor:
    """Source positions ``[K, B, n]`` along one axis when strip i of the output is strip order[i]."""
    width = n // grid
    position = torch.arange(n, device=order.device)
    strip = (position // width).clamp(max=grid - 1)
    moved = torch.take_along_dim(order, strip.expand(*order.shape[:2], n), dim=-1) * width + position % width
    return torch.where(position < grid * width, moved, position)


def _pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ConfigError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def _range(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low = high = math.nan
    if not 0 < low <= high < math.inf:
        raise ConfigError(f"{name} must be a range [low, high] with 0 < low <= high, got {value!r}")
    return low, high

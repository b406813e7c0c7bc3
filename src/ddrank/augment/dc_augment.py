"""DC's non-differentiable augmentation (Zhao, Mopuri & Bilen, 2021), batched and keyed like DSA.

DC evaluates MNIST students with ``utils.augment`` (``get_daparam``: strategy ``crop_scale_rotate``,
crop 4 px, scale 0.2, rotate 45°; ``crop_noise`` with noise 0.001 for BatchNorm students). Every
image gets one op drawn uniformly from the strategy:

* ``crop``: pad by ``crop`` px with the batch's per-channel mean, then take the window at an
  offset drawn from ``{0, …, 2·crop − 1}`` per axis (a shift of ``−crop … crop − 1``);
* ``scale``: resize to ``int(U(1 − s, 1 + s) · H)`` × ``int(U(1 − s, 1 + s) · W)`` by nearest
  neighbour, centre it on a zero canvas and cut the centre ``H × W``;
* ``rotate``: rotate by an integer angle in ``[−rotate, rotate)`` degrees about the centre
  (``scipy.ndimage.rotate`` with ``reshape``, then the centre cut), filling with the mean of
  the batch's channel means;
* ``noise``: add ``noise · N(0, 1)`` to every pixel.

Deviations from DC's code, both stated here: rotation resamples bilinearly, where scipy uses a
cubic spline (the geometry, angles and fill are DC's); the scaled width uses ``W`` where DC uses
``H`` for both sides (the same on DC's square images).

Images arrive as ``[K, B, C, H, W]`` with one counter-based key per member. A sample's draws depend
only on its member's key and its index in the batch, every op is computed for the whole batch and
selected per sample on the device, and the batch statistics are exact integer sums, so a member's
output is bit-identical alone or in an ensemble and no Python runs per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrank import rng
from ddrank.augment.transforms import TRANSFORMS
from ddrank.errors import ConfigError, InputError, UnknownNameError

OPS = ("crop", "scale", "rotate", "noise")
DEFAULT_STRATEGY = "crop_scale_rotate"

_STREAM, _NOISE_STREAM = 0xDC0, 0xDC1
# Columns of the per-sample table of uniform draws [K, B, 6].
_CHOICE, _CROP_ROW, _CROP_COL, _SCALE_H, _SCALE_W, _ANGLE = range(6)


@TRANSFORMS.register(
    "dc_augment",
    aliases=("dc_aug",),
    description="DC's per-image crop / scale / rotate / noise augmentation (its MNIST evaluation)",
)
class DCAugment:
    """``DCAugment(strategy, crop, scale, rotate, noise)(x [K, B, C, H, W], key [K])``; defaults are DC's."""

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        crop: int = 4,
        scale: float = 0.2,
        rotate: int = 45,
        noise: float = 0.001,
    ):
        names = tuple(name.strip().lower() for name in strategy.split("_") if name.strip())
        if not names:
            raise ConfigError(f"empty DC augmentation strategy; use e.g. {DEFAULT_STRATEGY!r}")
        for name in names:
            if name not in OPS:
                raise UnknownNameError("DC augmentation op", name, OPS)
        for field, value in (("crop", crop), ("rotate", rotate)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"DC augmentation {field} must be a positive integer, got {value!r}")
        if not 0.0 <= scale < 1.0:
            raise ConfigError(f"DC augmentation scale must lie in [0, 1), got {scale!r}")
        if not 0.0 <= noise < math.inf:
            raise ConfigError(f"DC augmentation noise must be a non-negative number, got {noise!r}")
        self.ops, self.crop, self.scale, self.rotate, self.noise = (
            names,
            crop,
            float(scale),
            rotate,
            float(noise),
        )

    def __repr__(self) -> str:
        return (
            f"DCAugment({'_'.join(self.ops)!r}, crop={self.crop}, scale={self.scale}, "
            f"rotate={self.rotate}, noise={self.noise})"
        )

    def params(self, key: Tensor, batch: int, height: int, width: int) -> dict[str, Tensor]:
        """Each sample's draws, ``[K, batch]`` int64: the op (index into ``ops``), the crop offsets
        (0 … 2·crop − 1), the scaled height and width, and the rotation angle in degrees."""
        u = rng.uniform(rng.fold(key, _STREAM), batch, 6).double()
        factor = 1.0 - self.scale + 2.0 * self.scale * u[..., (_SCALE_H, _SCALE_W)]
        sizes = torch.tensor([height, width], dtype=torch.float64, device=key.device)
        scaled = (factor * sizes).floor().long().clamp(min=1)
        return {
            "op": _integers(u[..., _CHOICE], len(self.ops)),
            "crop_row": _integers(u[..., _CROP_ROW], 2 * self.crop),
            "crop_col": _integers(u[..., _CROP_COL], 2 * self.crop),
            "height": scaled[..., 0],
            "width": scaled[..., 1],
            "angle": _integers(u[..., _ANGLE], 2 * self.rotate) - self.rotate,
        }

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        """Augment every sample with one op drawn from its member's key; same shape, dtype and device."""
        if x.dim() != 5 or not x.is_floating_point():
            raise InputError(
                f"DCAugment expects float images [K, B, C, H, W], got {x.dtype} {tuple(x.shape)}"
            )
        if key.dim() != 1 or key.dtype != torch.int64 or key.shape[0] != x.shape[0]:
            raise InputError(
                f"DCAugment expects one int64 key per member, shape [{x.shape[0]}]; "
                f"got {key.dtype} {tuple(key.shape)}"
            )
        key = key.to(x.device)
        K, B, C, H, W = x.shape
        work = x.float() if x.element_size() < 4 else x
        p = self.params(key, B, H, W)
        channel_mean, overall_mean = _batch_means(work)
        out = work
        for index, op in enumerate(self.ops):
            if op in self.ops[:index]:
                continue  # a repeated op only raises its odds; it is computed once
            chosen = torch.zeros_like(p["op"], dtype=torch.bool)
            for i, name in enumerate(self.ops):
                chosen |= (p["op"] == i) & (name == op)
            if op == "crop":
                result = self._crop(work, p, channel_mean)
            elif op == "scale":
                result = self._scale(work, p)
            elif op == "rotate":
                result = self._rotate(work, p, overall_mean)
            else:
                result = work + self.noise * _normal(rng.fold(key, _NOISE_STREAM), work.shape)
            out = torch.where(chosen[:, :, None, None, None], result, out)
        return out.to(x.dtype)

    def _crop(self, x: Tensor, p: dict[str, Tensor], channel_mean: Tensor) -> Tensor:
        """Shift by (offset − crop) per axis; pixels from outside the image take the channel mean."""
        H, W = x.shape[3:]
        rows = torch.arange(H, device=x.device) + (p["crop_row"] - self.crop)[..., None]
        cols = torch.arange(W, device=x.device) + (p["crop_col"] - self.crop)[..., None]
        inside = ((rows >= 0) & (rows < H))[..., :, None] & ((cols >= 0) & (cols < W))[..., None, :]
        moved = _gather(x, rows.clamp(0, H - 1), cols.clamp(0, W - 1))
        return torch.where(inside[:, :, None], moved, channel_mean[:, None, :, None, None].to(x.dtype))

    def _scale(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """Nearest-neighbour resize to (height, width), centred on a zero canvas, centre cut."""
        H, W = x.shape[3:]
        canvas = torch.maximum(
            torch.maximum(p["height"], p["width"]), torch.full_like(p["height"], max(H, W))
        )
        rows, row_ok = _scaled_source(p["height"], H, canvas)
        cols, col_ok = _scaled_source(p["width"], W, canvas)
        moved = _gather(x, rows, cols)
        return moved.masked_fill(~(row_ok[..., :, None] & col_ok[..., None, :])[:, :, None], 0.0)

    def _rotate(self, x: Tensor, p: dict[str, Tensor], fill: Tensor) -> Tensor:
        """scipy.ndimage.rotate(reshape=True) geometry and the centre cut, bilinear, mean-of-means fill."""
        K, B, C, H, W = x.shape
        theta = torch.deg2rad(p["angle"].double())
        cos, sin = torch.cos(theta), torch.sin(theta)
        out_h = (cos.abs() * H + sin.abs() * W + 0.5).floor()
        out_w = (sin.abs() * H + cos.abs() * W + 0.5).floor()
        top, left = ((out_h - H) / 2).floor(), ((out_w - W) / 2).floor()
        # Output pixel (y, x) is (y + top, x + left) of the rotated plane, whose centre maps onto the input's.
        dy = torch.arange(H, device=x.device, dtype=torch.float64) + (top - (out_h - 1) / 2)[..., None]
        dx = torch.arange(W, device=x.device, dtype=torch.float64) + (left - (out_w - 1) / 2)[..., None]
        cos, sin = cos[..., None, None], sin[..., None, None]
        src_y = cos * dy[..., :, None] + sin * dx[..., None, :] + (H - 1) / 2
        src_x = -sin * dy[..., :, None] + cos * dx[..., None, :] + (W - 1) / 2
        inside = (src_y >= 0) & (src_y <= H - 1) & (src_x >= 0) & (src_x <= W - 1)
        grid = torch.stack([2 * src_x / max(W - 1, 1) - 1, 2 * src_y / max(H - 1, 1) - 1], dim=-1)
        sampled = F.grid_sample(
            x.flatten(0, 1),
            grid.flatten(0, 1).to(x.dtype),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        ).view(K, B, C, H, W)
        return torch.where(inside[:, :, None], sampled, fill[:, None, None, None, None].to(x.dtype))


_MEAN_BITS = 30


def _batch_means(x: Tensor) -> tuple[Tensor, Tensor]:
    """Each member's per-channel batch mean ``[K, C]`` and mean of those means ``[K]``, in float32.

    Values are summed as int64 in units of 2**(e - 30), where 2**e bounds the member's largest
    magnitude: integer sums do not depend on the order of summation, so a member's means are the
    same bits alone, in an ensemble or on another device, with a fixed number of ops for any batch
    (a relative error below 2**-30 of the largest value, under float32's resolution).
    """
    K, B, C, H, W = x.shape
    peak = x.detach().abs().amax(dim=(1, 2, 3, 4)).double()
    exponent = torch.frexp(torch.where(peak > 0, peak, torch.ones_like(peak))).exponent.double()
    unit = torch.exp2(exponent - _MEAN_BITS)[:, None, None, None, None]
    steps = torch.round(x.detach().double() / unit).long()
    per_channel = steps.sum(dim=(1, 3, 4))  # [K, C], exact
    unit = unit.view(K)
    channel_mean = (per_channel.double() * unit[:, None] / (B * H * W)).float()
    overall_mean = (per_channel.sum(dim=1).double() * unit / (B * C * H * W)).float()
    return channel_mean, overall_mean


def _integers(u: Tensor, n: int) -> Tensor:
    """Integers in [0, n) from uniforms in [0, 1)."""
    return (u * n).long().clamp(max=n - 1)


def _gather(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``out[k, b, :, i, j] = x[k, b, :, rows[k, b, i], cols[k, b, j]]`` for in-range sources."""
    K, B, C, H, W = x.shape
    index = (rows[..., :, None] * W + cols[..., None, :]).reshape(K, B, 1, H * W).expand(K, B, C, H * W)
    return x.flatten(3).gather(3, index).view(K, B, C, H, W)


def _scaled_source(scaled: Tensor, size: int, canvas: Tensor) -> tuple[Tensor, Tensor]:
    """Source index ``[K, B, size]`` along one axis of DC's scale op, and whether it lies on the image.

    On the square canvas of side max(height, width, H, W) the resized image sits at
    int((canvas − scaled) / 2) and the cut at int((canvas − size) / 2). Nearest neighbour picks
    floor(i · size / scaled) as PyTorch's ``interpolate`` does (the ratio in float32), capped at size − 1.
    """
    position = (
        torch.arange(size, device=scaled.device) + ((canvas - size) // 2 - (canvas - scaled) // 2)[..., None]
    )
    ratio = (torch.tensor(float(size), dtype=torch.float32, device=scaled.device) / scaled.float())[..., None]
    source = (position.float() * ratio).floor().long().clamp(0, size - 1)
    return source, (position >= 0) & (position < scaled[..., None])


def _normal(key: Tensor, shape: torch.Size) -> Tensor:
    """Standard normal draws of ``shape`` [K, B, C, H, W] (Box–Muller on counter-based uniforms).

    Each sample's numbers depend only on its member's key and its index in the batch.
    """
    K, B = shape[:2]
    per_sample = math.prod(shape[2:])
    u = rng.uniform(key, B, 2, per_sample).double()
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, :, 0]))
    return (radius * torch.cos(2.0 * math.pi * u[:, :, 1])).float().view(shape)

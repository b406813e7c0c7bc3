"""Differentiable siamese augmentation (DSA), batched over ensemble members and samples.

Images arrive as ``[K, B, C, H, W]``: K ensemble members, each with its own batch, and one
counter-based key per member. Every draw for member k comes from ``key[k]`` alone and every
statistic is per sample, summed in a fixed order, so a member's output is bit-identical
whether it is augmented alone or inside an ensemble. Nothing branches in Python on a random
value: mode S computes each family for the whole batch and selects per member on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ddrank import rng
from ddrank.errors import ConfigError, InputError, UnknownNameError

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "_".join(FAMILIES)

_AFFINE = ("scale", "rotate")
_STREAM = 0xD5A
# Rows of the per-call table of uniform draws [K, rows, B]; a family always reads the same rows,
# so its draws for a member do not depend on the strategy, the mode or the other members.
_ROWS = {
    "choice": slice(0, 1),
    "color": slice(1, 4),
    "crop": slice(4, 6),
    "cutout": slice(6, 8),
    "flip": slice(8, 9),
    "scale": slice(9, 11),
    "rotate": slice(11, 12),
}
_TABLE_ROWS = 12


@dataclass(frozen=True)
class DSAParams:
    """Strengths of the DSA families; the defaults are those of the DC/DSA/DM reference."""

    scale: float = 1.2
    rotate: float = 15.0
    flip: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop: float = 0.125
    cutout: float = 0.5

    def __post_init__(self) -> None:
        limits = {"scale": (1.0, math.inf), "flip": (0.0, 1.0), "crop": (0.0, 1.0), "cutout": (0.0, 1.0)}
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = limits.get(f.name, (0.0, math.inf))
            if not low <= value <= high:
                raise ConfigError(f"DSA parameter {f.name}={value} is outside [{low}, {high}]")


class DSA:
    """Batched DSA: ``DSA(strategy, mode)(x [K, B, C, H, W], key [K])`` on the input's device."""

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        mode: Literal["S", "M"] = "S",
        params: DSAParams = DSAParams(),  # noqa: B008 - frozen, shared safely
    ):
        names = tuple(name.strip().lower() for name in strategy.split("_")) if strategy.strip() else ()
        if not names:
            raise ConfigError("empty DSA strategy; use e.g. 'color_crop_cutout_flip_scale_rotate'")
        for name in names:
            if name not in FAMILIES:
                raise UnknownNameError("augmentation family", name, FAMILIES)
        if mode not in ("S", "M"):
            raise ConfigError(f"unknown DSA mode {mode!r}: use 'S' (one family per batch) or 'M' (all)")
        self.families: tuple[str, ...] = names
        self.mode = mode
        self.params = params

    def __repr__(self) -> str:
        return f"DSA({'_'.join(self.families)!r}, mode={self.mode!r})"

    def __call__(self, x: Tensor, key: Tensor) -> Tensor:
        """Augment every member's batch with draws from that member's key; same shape, dtype, device."""
        if x.dim() != 5 or not x.is_floating_point():
            raise InputError(f"DSA expects float images [K, B, C, H, W], got {x.dtype} {tuple(x.shape)}")
        if key.dim() != 1 or key.dtype != torch.int64 or key.shape[0] != x.shape[0]:
            raise InputError(
                f"DSA expects one int64 key per member, shape [{x.shape[0]}]; "
                f"got {key.dtype} {tuple(key.shape)}"
            )
        key = key.to(x.device)
        return self._all(x, key) if self.mode == "M" else self._one(x, key)

    def _all(self, x: Tensor, key: Tensor) -> Tensor:
        """Mode M: every family in strategy order; consecutive scale/rotate share one resampling."""
        tables: dict[int, Tensor] = {}
        warp = None
        for i, family in enumerate(self.families):
            repeat = self.families[:i].count(family)  # a repeated family draws afresh
            if repeat not in tables:
                tables[repeat] = _draw(key, x.shape[1], repeat)
            u = tables[repeat][:, _ROWS[family]]
            if family in _AFFINE:
                matrix = _sampling_matrix(family, u, self.params)
                warp = matrix if warp is None else _compose(warp, matrix)
                continue
            if warp is not None:
                x, warp = _warp(x, warp), None
            if family == "color":
                x = _color(x, u, self.params)
            elif family == "crop":
                rows, cols = _crop_source(u, x.shape, self.params.crop)
                x = _move(x, rows, cols).masked_fill(~_inside(rows, cols, *x.shape[3:]), 0)
            elif family == "cutout":
                x = x.masked_fill(~_cutout_keep(u, x.shape, self.params.cutout), 0)
            else:
                rows = torch.arange(x.shape[3], device=x.device)
                x = _move(x, rows, _flip_source(u, x.shape[4], self.params.flip))
        return x if warp is None else _warp(x, warp)

    def _one(self, x: Tensor, key: Tensor) -> Tensor:
        """Mode S: each member picks one family (pixel moves, an affine warp or colour).

        On a CPU each kind is computed for the members that picked it only; elsewhere every kind
        present is computed for the whole batch and selected per member on the device (no host
        synchronisation, so the step can be captured in a CUDA graph). A member's output is the same
        either way, since each is computed from its own images and draws alone.
        """
        table = _draw(key, x.shape[1])
        pick = _integers(table[:, _ROWS["choice"].start, 0], len(self.families))
        chosen: dict[str, Tensor] = {}
        for i, family in enumerate(self.families):
            chosen[family] = pick == i if family not in chosen else chosen[family] | (pick == i)
        kinds = [
            (self._moved, chosen.keys() & {"crop", "flip", "cutout"}),
            (self._warped, chosen.keys() & set(_AFFINE)),
            (self._colored, chosen.keys() & {"color"}),
        ]
        kinds = [(kind, sorted(families)) for kind, families in kinds if families]
        if _by_subsets(x):
            out = torch.empty_like(x)
            for kind, families in kinds:
                members = torch.nonzero(torch.stack([chosen[f] for f in families]).any(0)).flatten()
                if len(members):
                    picked = {f: chosen[f][members] for f in families}
                    out[members] = kind(x[members], table[members], picked)
            return out
        out = x
        for kind, families in kinds:
            hit = torch.stack([chosen[f] for f in families]).any(0)
            out = torch.where(_per_member(hit), kind(x, table, {f: chosen[f] for f in families}), out)
        return out

    def _moved(self, x: Tensor, table: Tensor, chosen: dict[str, Tensor]) -> Tensor:
        """Crop, flip and cutout: exact pixel moves and masks, each member by the family it picked."""
        K, B, C, H, W = x.shape
        rows = torch.arange(H, device=x.device).expand(K, B, H)
        cols = torch.arange(W, device=x.device).expand(K, B, W)
        keep = None
        if "crop" in chosen:
            crop_rows, crop_cols = _crop_source(table[:, _ROWS["crop"]], x.shape, self.params.crop)
            rows = torch.where(chosen["crop"][:, None, None], crop_rows, rows)
            cols = torch.where(chosen["crop"][:, None, None], crop_cols, cols)
            keep = _inside(rows, cols, H, W)
        if "flip" in chosen:
            flip_cols = _flip_source(table[:, _ROWS["flip"]], W, self.params.flip)
            cols = torch.where(chosen["flip"][:, None, None], flip_cols, cols)
        if "cutout" in chosen:
            cut = _cutout_keep(table[:, _ROWS["cutout"]], x.shape, self.params.cutout)
            cut = cut | ~_per_member(chosen["cutout"])
            keep = cut if keep is None else keep & cut
        out = _move(x, rows, cols)
        return out if keep is None else out.masked_fill(~keep, 0)

    def _warped(self, x: Tensor, table: Tensor, chosen: dict[str, Tensor]) -> Tensor:
        """Scale or rotate: one bilinear resampling with each member's matrix."""
        matrix = None
        for family in _AFFINE:
            if family in chosen:
                own = _sampling_matrix(family, table[:, _ROWS[family]], self.params)
                hit = chosen[family][:, None, None, None]
                matrix = own if matrix is None else torch.where(hit, own, matrix)
        return _warp(x, matrix)

    def _colored(self, x: Tensor, table: Tensor, chosen: dict[str, Tensor]) -> Tensor:
        return _color(x, table[:, _ROWS["color"]], self.params)


def dsa_from_spec(spec: str | None, mode: str = "S") -> DSA | None:
    """The DSA for a strategy string like ``"color_crop_cutout_flip_scale_rotate"``; None or "none" → None."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    return DSA(spec, mode=mode)  # type: ignore[arg-type]


def _draw(key: Tensor, batch: int, repeat: int = 0) -> Tensor:
    """All uniform draws of one call, ``[K, rows, B]``, from one hash of each member's key."""
    return rng.uniform(rng.fold(key, _STREAM, repeat), _TABLE_ROWS, batch)


def _by_subsets(x: Tensor) -> bool:
    """Whether mode S computes each kind for the members that picked it only: on a CPU, eagerly
    (indexing by a data-dependent set of members is cheap there, and nothing is captured)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _integers(u: Tensor, n: int) -> Tensor:
    """Integers in [0, n) from uniforms in [0, 1), exactly the same on every device."""
    return (u * n).long().clamp(max=n - 1)


def _per_member(flag: Tensor) -> Tensor:
    """A per-member flag ``[K]`` shaped to broadcast over ``[K, B, C, H, W]``."""
    return flag[:, None, None, None, None]


def _fixed_order_sum(x: Tensor, dim: int) -> Tensor:
    """Sum over ``dim`` (kept) by pairwise halving: the same bits for any batch layout or device."""
    rest = None
    while x.shape[dim] > 1:
        n = x.shape[dim]
        if n % 2:
            last = x.narrow(dim, n - 1, 1)
            rest = last if rest is None else rest + last
        x = x.narrow(dim, 0, n // 2) + x.narrow(dim, n // 2, n // 2)
    return x if rest is None else x + rest


def _color(x: Tensor, u: Tensor, p: DSAParams) -> Tensor:
    """Brightness, saturation, contrast in that order, folded into one per-sample affine map.

    With brightness offset b, saturation factor s, contrast factor f, per-pixel channel mean m and
    per-sample mean M of x, the three steps give ``f*s*x + f*(1-s)*m + (1-f)*M + b``.
    """
    K, B, C, H, W = x.shape
    work = x.float() if x.element_size() < 4 else x
    u = u.to(work.dtype)[..., None, None, None]
    b, s, f = (u[:, 0] - 0.5) * p.brightness, u[:, 1] * p.saturation, u[:, 2] + p.contrast
    channel_mean = _fixed_order_sum(work, 2) / C
    image_mean = (_fixed_order_sum(channel_mean.flatten(2), 2) / (H * W))[..., None, None]
    return (work * (f * s) + (channel_mean * (f - f * s) + (image_mean * (1 - f) + b))).to(x.dtype)


def _crop_source(u: Tensor, shape: torch.Size, ratio: float) -> tuple[Tensor, Tensor]:
    """Source rows ``[K, B, H]`` and columns ``[K, B, W]`` of an integer translation (may leave the image)."""
    sources = []
    for axis, n in enumerate(shape[3:]):
        limit = int(n * ratio + 0.5)
        shift = _integers(u[:, axis], 2 * limit + 1) - limit
        sources.append(torch.arange(n, device=u.device) + shift[..., None])
    return sources[0], sources[1]


def _flip_source(u: Tensor, width: int, prob: float) -> Tensor:
    """Source columns ``[K, B, W]``: mirrored for the samples drawn to flip."""
    cols = torch.arange(width, device=u.device)
    return torch.where(u[:, 0, :, None] < prob, width - 1 - cols, cols)


def _inside(rows: Tensor, cols: Tensor, H: int, W: int) -> Tensor:
    """Boolean ``[K, B, 1, H, W]``: True where the source pixel lies inside the image."""
    return (((rows >= 0) & (rows < H))[..., :, None] & ((cols >= 0) & (cols < W))[..., None, :])[:, :, None]


def _move(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Exact pixel moves ``out[..., i, j] = x[..., rows[i], cols[j]]``, sources clamped to the image."""
    K, B, C, H, W = x.shape
    index = rows.clamp(0, H - 1)[..., :, None] * W + cols.clamp(0, W - 1)[..., None, :]
    index = index.expand(K, B, H, W).reshape(K, B, 1, H * W).expand(K, B, C, H * W)
    return x.flatten(3).gather(3, index).view(K, B, C, H, W)


def _cutout_keep(u: Tensor, shape: torch.Size, ratio: float) -> Tensor:
    """Boolean keep-mask ``[K, B, 1, H, W]``: False on a square centred as in the reference, clamped."""
    inside = []
    for axis, n in enumerate(shape[3:]):
        side = int(n * ratio + 0.5)
        start = _integers(u[:, axis], n + 1 - side % 2)[..., None] - side // 2
        position = torch.arange(n, device=u.device)
        inside.append((position >= start) & (position < start + side))
    return ~(inside[0][..., :, None] & inside[1][..., None, :])[:, :, None]


def _sampling_matrix(family: str, u: Tensor, p: DSAParams) -> Tensor:
    """Per-sample 2x2 sampling matrices ``[K, B, 2, 2]`` for scale or rotate."""
    if family == "scale":
        s = u * (p.scale - 1.0 / p.scale) + 1.0 / p.scale
        return torch.diag_embed(s.transpose(1, 2))
    angle = (u[:, 0] - 0.5) * (2.0 * math.radians(p.rotate))
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))


def _compose(first: Tensor, then: Tensor) -> Tensor:
    """Sampling matrix of ``first`` followed by ``then``: output p samples the input at first @ then @ p."""
    return (first[..., :, :, None] * then[..., None, :, :]).sum(-2)


def _warp(x: Tensor, matrix: Tensor) -> Tensor:
    """Bilinear resampling at ``matrix @ p`` (normalised, align_corners=True, zero padding), per sample."""
    K, B, C, H, W = x.shape
    work = x.float() if x.element_size() < 4 else x
    matrix = matrix.to(work.dtype)[..., None, None]
    xs = torch.linspace(-1.0, 1.0, W, device=x.device, dtype=work.dtype)
    ys = torch.linspace(-1.0, 1.0, H, device=x.device, dtype=work.dtype)[:, None]
    grid_x = matrix[:, :, 0, 0] * xs + matrix[:, :, 0, 1] * ys
    grid_y = matrix[:, :, 1, 0] * xs + matrix[:, :, 1, 1] * ys
    grid = torch.stack([grid_x, grid_y], dim=-1).flatten(0, 1)
    out = F.grid_sample(work.flatten(0, 1), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(K, B, C, H, W).to(x.dtype)

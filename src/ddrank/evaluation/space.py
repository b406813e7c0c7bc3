"""The space students train in: real and synthetic images normalised, or ZCA-whitened as MTT / DATM do."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ddrank.augment import ZCA
from ddrank.data.base import DatasetInfo
from ddrank.data.real import DATASETS, RealData, normalize
from ddrank.errors import ConfigError
from ddrank.fingerprint import fingerprint
from ddrank.paths import cache_dir


class TrainingSpace:
    """Maps real and synthetic images into the space students train in: normalised or ZCA-whitened."""

    def __init__(self, real: RealData, zca: ZCA | None):
        self.info, self.zca = real.info, zca
        self.tag = "normalized" if zca is None else f"zca:{zca.fingerprint}"

    def real(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 real images → training space (ZCA is fitted and applied on [0, 1] pixels, as MTT does)."""
        if self.zca is None:
            return normalize(images, self.info)
        return self.zca.apply(images.float() / 255.0)

    def synthetic(self, images: torch.Tensor, space: str, protocol: str) -> torch.Tensor:
        """Synthetic images given in ``space`` (pixel, normalized or zca) → training space."""
        mean = torch.tensor(self.info.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.info.std).view(1, -1, 1, 1)
        if self.zca is None:
            if space == "normalized":
                return images
            if space == "pixel":
                return (images - mean) / std
            raise ConfigError(
                f"images in space {space!r} need a protocol with ZCA whitening; {protocol!r} has none"
            )
        if space == "zca":
            return images
        pixels = images if space == "pixel" else images * std + mean
        return self.zca.apply(pixels)


def set_fingerprint(base: str, kind: str, tag: str, indices: torch.Tensor | None = None) -> str:
    """The identity of a set derived from ``base`` content: its kind, training space and chosen indices."""
    parts: list = [f"{base}:{kind}:{tag}"]
    if indices is not None:
        parts.append(indices.numpy().astype(np.int64))
    return fingerprint(*parts)


def fitted_zca(real: RealData, regularization: float) -> ZCA:
    """ZCA fitted on the whole real training set in [0, 1] pixels, cached on disk per dataset."""
    path = cache_dir("zca") / f"{real.info.name}-{real.fingerprint[:16]}-{regularization:g}.pt"
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        return ZCA(**stored)
    zca = ZCA.fit(real.train_images.float() / 255.0, regularization)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "mean": zca.mean,
            "transform": zca.transform,
            "inverse": zca.inverse,
            "regularization": zca.regularization,
            "fingerprint": zca.fingerprint,
        },
        tmp,
    )
    tmp.replace(path)
    return zca


# Datasets read from image files (those the registry lets resize), which DD-Ranking reads as image
# folders too: its random subsets in ``image`` format are copies of the original files (pixels
# unchanged); every other dataset's subsets go through a JPEG round trip.
FOLDER_DATASETS = frozenset(entry.name for entry in DATASETS.entries() if entry.value.resizable)


def jpeg_round_trip(images: torch.Tensor, info: DatasetInfo, quality: int) -> torch.Tensor:
    """uint8 images [N, C, H, W] as DD-Ranking's ``random_data_format: image`` stores and reloads them
    for datasets held as arrays: normalised to float32, de-normalised, clamped to [0, 1], ×255
    truncated to uint8 (``ToPILImage``), saved by PIL as JPEG at ``quality`` and decoded again."""
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)
    normalised = (images.float().div(255) - mean) / std
    pixels = (normalised * std + mean).clamp(0, 1).mul(255).byte()
    out = torch.empty_like(pixels)
    for i, image in enumerate(pixels):
        array = image.permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(
            buffer, format="JPEG", quality=quality
        )
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer))
        out[i] = torch.from_numpy(decoded.reshape(*decoded.shape[:2], -1).copy()).permute(2, 0, 1)
    return out


def round_trips(info: DatasetInfo, random_data: str) -> bool:
    """Whether the protocol's ``random_data`` stores random subsets of this dataset as JPEG files."""
    return random_data == "image" and info.name not in FOLDER_DATASETS


def view_images(images: torch.Tensor, transforms: Sequence[dict[str, Any]], size: int) -> torch.Tensor:
    """uint8 test images through a protocol's test transforms (``resize``: the shorter side, or an
    exact [H, W] pair; ``center_crop``), in chunks; the result must have the dataset's ``size``."""
    from torchvision.transforms.v2 import functional as tvf  # only protocols with test transforms need it

    chunks = []
    for start in range(0, images.shape[0], 1024):
        chunk = images[start : start + 1024]
        for step in transforms:
            value = step["size"]
            target = list(value) if isinstance(value, list | tuple) else [value]
            if step["name"] == "resize":
                chunk = tvf.resize(chunk, target, antialias=True)
            else:
                chunk = tvf.center_crop(chunk, target)
        chunks.append(chunk)
    out = torch.cat(chunks) if chunks else images
    if tuple(out.shape[-2:]) != (size, size):
        raise ConfigError(
            f"test transforms {list(transforms)} give {tuple(out.shape[-2:])} images; the students take "
            f"{size}x{size}: end them with center_crop of size {size}"
        )
    return out

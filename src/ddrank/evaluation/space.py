"""The space students train in: real and synthetic images normalised, or ZCA-whitened as MTT / DATM do."""

from __future__ import annotations

import numpy as np
import torch

from ddrank.augment import ZCA
from ddrank.data.real import RealData, normalize
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

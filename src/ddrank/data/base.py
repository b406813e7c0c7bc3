"""The dataset registry: what each named dataset is, where its files lie, and how to fetch them.

A :class:`DatasetSpec` ties a name to its :class:`DatasetInfo` (classes, channels, size,
normalisation, training-set size), the on-disk layout shown in errors, the function that finds
its files under a data root, and, where the licence allows, the files to download.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ddrank.errors import ConfigError, InputError
from ddrank.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "DownloadPlan",
    "RealData",
    "Resource",
    "Source",
    "dataset_info",
    "normalize",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a normaliser need to know about a dataset, without loading it.

    ``mean``/``std`` are per channel on [0, 1] pixel values. ``train_size`` is the number of
    training images of the standard split (None where the tree decides, as for ``imagefolder``).
    For ``imagefolder`` the class count is 0 until the tree has been read (``load_real`` fills it in).
    """

    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_root: bool
    train_size: int | None = None


@dataclass
class RealData:
    """A loaded dataset: uint8 image tensors, int64 labels, class names and a content hash.

    Image tensors of cached datasets are read-only memory maps: index or ``.clone()`` them before
    any in-place change.
    """

    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    fingerprint: str


@dataclass(frozen=True)
class Source:
    """The files a dataset's content depends on, and how to write its split arrays into a folder.

    ``write(folder)`` saves ``{train,test}_{images,labels}.npy`` there and returns the class names.
    """

    files: list[Path]
    write: Callable[[Path], list[str]]


@dataclass(frozen=True)
class Resource:
    """One file to download: its URL, its name on disk, its published MD5 and where it goes.

    ``folder`` is relative to the data root; ``extract`` unpacks an archive there after the
    checksum passes.
    """

    url: str
    filename: str
    md5: str | None
    folder: str = ""
    extract: bool = False


class DownloadPlan:
    """The files of a downloadable dataset and where their URLs and checksums come from.

    ``resources`` may be a function that lists them, called on first use: torchvision's dataset
    classes are then imported only when a download or a message needs their URLs, not at start-up.
    """

    def __init__(self, resources: tuple[Resource, ...] | Callable[[], tuple[Resource, ...]], source: str):
        self._resources, self.source = resources, source

    @functools.cached_property
    def resources(self) -> tuple[Resource, ...]:
        return self._resources() if callable(self._resources) else self._resources

    def __repr__(self) -> str:
        return f"DownloadPlan(source={self.source!r})"


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its defaults, its expected layout (shown in errors) and its reader.

    ``download`` lists the files to fetch where the licence allows it; ``manual`` says where to
    get a dataset that must be obtained by hand.
    """

    info: DatasetInfo
    layout: str
    locate: Callable[[Path, DatasetInfo], Source] | None
    resizable: bool = False
    stats_options: tuple[str, ...] = ()
    download: DownloadPlan | None = None
    manual: str | None = None


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def dataset_info(name: str, *, stats: str | None = None) -> DatasetInfo:
    """The defaults of dataset ``name``; ``stats`` picks another dataset's normalisation where allowed."""
    spec = DATASETS.get(name)
    info = spec.info
    wanted = DATASETS.canonical(stats) if stats is not None and stats in DATASETS else stats
    if wanted is None or wanted == info.name:
        return info
    if wanted not in spec.stats_options:
        valid = ", ".join(repr(option) for option in (info.name, *spec.stats_options))
        raise ConfigError(f"dataset {info.name!r} has no normalisation statistics {stats!r} (valid: {valid})")
    other = DATASETS.get(wanted).info
    return replace(info, mean=other.mean, std=other.std)


def normalize(images_uint8: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """float32 ``(x / 255 - mean) / std`` per channel, for uint8 images ``[..., C, H, W]`` on any device."""
    if images_uint8.dtype != torch.uint8:
        raise InputError(f"normalize expects uint8 images, got {images_uint8.dtype}")
    if images_uint8.dim() < 3 or images_uint8.shape[-3] != info.channels:
        raise InputError(
            f"normalize expects images [..., {info.channels}, H, W] for dataset {info.name!r}, "
            f"got shape {list(images_uint8.shape)}"
        )
    mean = torch.tensor(info.mean, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    return images_uint8.float().div_(255).sub_(mean).div_(std)  # in place: one buffer, the same values

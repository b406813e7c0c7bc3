"""Real datasets: the registered names, and :func:`load_real` to get one as tensors.

Every dataset loads as uint8 ``[N, C, H, W]`` train and test tensors plus int64 labels. Files are
decoded once into the fingerprinted cache (:mod:`ddrank.data.cache`); later loads memory-map it,
so even ImageNet-1K need not fit in RAM. ``digits`` ships with scikit-learn and needs neither a
data root nor a cache. Datasets whose licence allows it download with ``download=True``
(:mod:`ddrank.data.download`); the registry, readers and layouts live in their own modules.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ddrank.data import layouts
from ddrank.data.base import (
    DATASETS,
    DatasetInfo,
    DatasetSpec,
    DownloadPlan,
    RealData,
    Resource,
    Source,
    dataset_info,
    normalize,
)
from ddrank.data.cache import fingerprint, load_cached
from ddrank.data.download import default_data_root, download_dataset
from ddrank.errors import ConfigError, DataError, InputError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "RealData",
    "dataset_info",
    "download_dataset",
    "load_real",
    "normalize",
]


def load_real(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    size: int | None = None,
    stats: str | None = None,
    download: bool = False,
) -> RealData:
    """Load dataset ``name`` from ``root`` (decoding it once into the on-disk cache).

    ``size`` sets the resolution of image-folder datasets; ``stats`` as in :func:`dataset_info`.
    Without ``root`` the default data root (``data/`` in the ddrank cache dir) is used when it
    holds the dataset. ``download=True`` first fetches and verifies the dataset's files into
    ``root`` (or the default root) unless they are already there.
    """
    spec = DATASETS.get(name)
    info = dataset_info(name, stats=stats)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"size must be a positive integer, got {size!r}")
        if not spec.resizable and size != info.size:
            raise ConfigError(
                f"dataset {info.name!r} is stored at {info.size}x{info.size}; "
                f"size={size} applies only to image-folder datasets"
            )
        info = replace(info, size=size)
    if spec.locate is None:
        return _load_digits(info)
    if download:
        root = download_dataset(info.name, root)
    directory, source = _locate(spec, info, root)
    return load_cached(info, directory, source)


def _locate(spec: DatasetSpec, info: DatasetInfo, root: str | os.PathLike[str] | None) -> tuple[Path, Source]:
    """The data root and the dataset's files in it: the given root, or the default one when it
    holds the dataset; else an error saying what to pass."""
    assert spec.locate is not None
    if root is None:
        default = default_data_root()
        try:
            return default, spec.locate(default, info)
        except InputError:
            fetch = (
                f"; or pass --download (download=True in Python) to fetch it into {default}"
                if spec.download
                else ""
            )
            raise InputError(
                f"dataset {info.name!r} needs --data-root (root= in Python): the folder holding {spec.layout}"
                f"{fetch}"
            ) from None
    directory = Path(root).expanduser().resolve()
    if not directory.is_dir():
        raise InputError(
            f"data root {directory} for dataset {info.name!r} does not exist; expected {spec.layout}"
            + _how_to_fetch(spec, directory)
        )
    try:
        return directory, spec.locate(directory, info)
    except DataError:
        raise
    except InputError as exc:
        raise InputError(f"{exc}{_how_to_fetch(spec, directory)}") from None


def _how_to_fetch(spec: DatasetSpec, directory: Path) -> str:
    """What to add to a missing dataset's message: pass --download, or (ImageNet) where to get it."""
    if spec.download is not None:
        return f"; or pass --download (download=True in Python) to fetch it into {directory}"
    if spec.manual is not None:
        return "; " + spec.manual.format(root=directory)
    return ""


# --- digits -------------------------------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0
SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _digits_split() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits, 0..16 scaled to uint8, split 70/30 stratified with a fixed seed.

    The split is kept in the cache per scikit-learn version: importing scikit-learn takes longer
    than any digits run's set-up, so later runs read the arrays instead.
    """
    from importlib.metadata import version

    from ddrank.paths import cache_dir

    name = f"digits-sklearn-{version('scikit-learn')}-{DIGITS_TEST_FRACTION}-{DIGITS_SPLIT_SEED}.npz"
    try:
        path: Path | None = cache_dir("datasets") / name
    except InputError:  # no usable cache directory: digits need none
        path = None
    try:
        if path is not None:
            with np.load(path, allow_pickle=False) as stored:
                return {key: stored[key] for key in SPLIT_KEYS}
    except (OSError, ValueError, KeyError):  # not cached yet, or unreadable: split again
        pass
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    split = dict(zip(SPLIT_KEYS, (train_images, train_labels, test_images, test_labels), strict=True))
    if path is not None:
        try:
            tmp = path.with_name(f".{name}.{os.getpid()}.npz")
            np.savez(tmp, **split)
            tmp.replace(path)
        except OSError:  # a read-only cache: the split is simply made again next time
            pass
    return split


def _channels_last(images: np.ndarray) -> torch.Tensor:
    """``[N, C, H, W]`` images held channels-last in memory, as scikit-learn's split returns digits (the
    layout decides which convolution kernel runs, and so the order of its sums): the same tensor
    whether the split was just made or read back from the cache."""
    held = torch.empty(images.shape, dtype=torch.uint8, memory_format=torch.channels_last)
    return held.copy_(torch.from_numpy(images))


def _load_digits(info: DatasetInfo) -> RealData:
    """The digits split (see :func:`_digits_split`) as a dataset."""
    split = _digits_split()
    train = split["train_images"], split["train_labels"]
    test = split["test_images"], split["test_labels"]
    return RealData(
        info=info,
        train_images=_channels_last(train[0]),
        train_labels=torch.from_numpy(train[1]),
        test_images=_channels_last(test[0]),
        test_labels=torch.from_numpy(test[1]),
        classes=[str(digit) for digit in range(10)],
        fingerprint=fingerprint([train, test]),
    )


# --- registry -----------------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_FOLDER_LAYOUT = "train/<class>/<image> and val/<class>/<image>"
_IMAGENET_HOWTO = (
    "ImageNet's licence does not allow ddrank to download it: request access at https://image-net.org, "
    "then lay it out as {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG "
    "(the validation images sorted into wnid folders, e.g. with the devkit's ground truth)"
)
_SUBSET_HOWTO = (
    "{name} is a 10-class subset of ImageNet-1K and is not downloaded: build it from ImageNet "
    "(request access at https://image-net.org) with its class list (MTT's utils.py, "
    "https://github.com/GeorgeCazenavette/mtt-distillation), as {root}/train/<wnid>/* and {root}/val/<wnid>/*"
)


def _register(name: str, description: str, spec: DatasetSpec, *, aliases: tuple[str, ...] = ()) -> None:
    DATASETS.add(name, spec, aliases=aliases, description=description)


def _folder_info(name: str, num_classes: int, size: int, train_size: int | None) -> DatasetInfo:
    return DatasetInfo(
        name, num_classes, 3, size, _IMAGENET_MEAN, _IMAGENET_STD, needs_root=True, train_size=train_size
    )


def _torchvision_plan(name: str, folder: str, *, extract: bool) -> DownloadPlan:
    """The files torchvision's dataset class ``name`` downloads (URL and MD5 from its attributes, read
    when first needed)."""

    def resources() -> tuple[Resource, ...]:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, name)
        if hasattr(cls, "resources"):  # MNIST family: a list of (file, md5) under the first mirror
            mirror = cls.mirrors[0]
            return tuple(Resource(mirror + file, file, md5, folder) for file, md5 in cls.resources)
        if hasattr(cls, "split_list"):  # SVHN: split -> [url, file, md5]
            return tuple(
                Resource(url, file, md5, folder)
                for split, (url, file, md5) in cls.split_list.items()
                if split != "extra"
            )
        return (Resource(cls.url, cls.filename, cls.tgz_md5, folder, extract=extract),)  # CIFAR: one archive

    return DownloadPlan(resources, source=f"torchvision.datasets.{name}")


# The Tiny ImageNet archive's MD5 as Avalanche's TinyImagenet dataset checks it (ContinualAI/avalanche,
# avalanche/benchmarks/datasets/tiny_imagenet/tiny_imagenet.py); torchvision has no Tiny ImageNet class.
_TINY_IMAGENET = DownloadPlan(
    (
        Resource(
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "tiny-imagenet-200.zip",
            "90528d7ca1a48142e341f4ef8d21d0de",
            extract=True,
        ),
    ),
    source="cs231n.stanford.edu, MD5 as Avalanche's TinyImagenet checks it",
)

# Normalisation statistics: DC's utils.get_dataset (VICO-UoE/DatasetCondensation) for digits' kin
# MNIST, FashionMNIST, SVHN, CIFAR10 and CIFAR100; KMNIST is not among DC's datasets, so its values
# are the per-pixel mean/std of its training images as commonly used with torchvision's KMNIST.
_register(
    "digits",
    "scikit-learn's bundled 8x8 handwritten digits (10 classes, 1,797 images); needs no download",
    DatasetSpec(
        DatasetInfo("digits", 10, 1, 8, (0.305604,), (0.375962,), needs_root=False, train_size=1257),
        "nothing (bundled with scikit-learn)",
        None,
    ),
)
_register(
    "cifar10",
    "CIFAR-10 (10 classes, 32x32) from the python-pickle batches",
    DatasetSpec(
        DatasetInfo(
            "cifar10",
            10,
            3,
            32,
            (0.4914, 0.4822, 0.4465),
            (0.2023, 0.1994, 0.2010),
            needs_root=True,
            train_size=50_000,
        ),
        "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
        partial(layouts.locate_cifar, layouts.CIFAR10),
        download=_torchvision_plan("CIFAR10", "", extract=True),
    ),
    aliases=("cifar-10",),
)
_register(
    "cifar100",
    "CIFAR-100 (100 fine classes, 32x32) from the python pickles; stats='cifar10' for MTT/DATM normalisation",
    DatasetSpec(
        DatasetInfo(
            "cifar100",
            100,
            3,
            32,
            (0.5071, 0.4866, 0.4409),
            (0.2673, 0.2564, 0.2762),
            needs_root=True,
            train_size=50_000,
        ),
        "cifar-100-python/ (train, test, meta)",
        partial(layouts.locate_cifar, layouts.CIFAR100),
        stats_options=("cifar10",),
        download=_torchvision_plan("CIFAR100", "", extract=True),
    ),
    aliases=("cifar-100",),
)
_register(
    "mnist",
    "MNIST (10 digits, 28x28 grey) from torchvision's MNIST/raw/ IDX files",
    DatasetSpec(
        DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), needs_root=True, train_size=60_000),
        "MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte; gzip'd or not)",
        partial(layouts.locate_idx, layouts.MNIST),
        download=_torchvision_plan("MNIST", "MNIST/raw", extract=False),
    ),
)
_register(
    "fashion-mnist",
    "Fashion-MNIST (10 clothing classes, 28x28 grey) from torchvision's FashionMNIST/raw/ IDX files",
    DatasetSpec(
        DatasetInfo("fashion-mnist", 10, 1, 28, (0.2861,), (0.3530,), needs_root=True, train_size=60_000),
        "FashionMNIST/raw/ (the four IDX files, gzip'd or not)",
        partial(layouts.locate_idx, layouts.FASHION_MNIST),
        download=_torchvision_plan("FashionMNIST", "FashionMNIST/raw", extract=False),
    ),
    aliases=("fashionmnist", "fashion_mnist", "fmnist"),
)
_register(
    "kmnist",
    "Kuzushiji-MNIST (10 hiragana classes, 28x28 grey) from torchvision's KMNIST/raw/ IDX files",
    DatasetSpec(
        DatasetInfo("kmnist", 10, 1, 28, (0.1918,), (0.3483,), needs_root=True, train_size=60_000),
        "KMNIST/raw/ (the four IDX files, gzip'd or not)",
        partial(layouts.locate_idx, layouts.KMNIST),
        download=_torchvision_plan("KMNIST", "KMNIST/raw", extract=False),
    ),
    aliases=("kuzushiji-mnist",),
)
_register(
    "svhn",
    "SVHN cropped digits (10 classes, 32x32) from train_32x32.mat and test_32x32.mat",
    DatasetSpec(
        DatasetInfo(
            "svhn",
            10,
            3,
            32,
            (0.4377, 0.4438, 0.4728),
            (0.1980, 0.2010, 0.1970),
            needs_root=True,
            train_size=73_257,
        ),
        "train_32x32.mat and test_32x32.mat (as torchvision's SVHN keeps them)",
        layouts.locate_svhn,
        download=_torchvision_plan("SVHN", "", extract=False),
    ),
)
_register(
    "tinyimagenet",
    "Tiny ImageNet (200 classes, 64x64); validation split as test",
    DatasetSpec(
        _folder_info("tinyimagenet", 200, 64, 100_000),
        "tiny-imagenet-200/: train/<wnid>/images/*.JPEG, "
        "val/ (images/ + val_annotations.txt or class folders)",
        layouts.locate_tinyimagenet,
        resizable=True,
        download=_TINY_IMAGENET,
    ),
    aliases=("tiny-imagenet", "tiny"),
)
_register(
    "imagenet1k",
    "ImageNet-1K (1000 classes, 224x224) from train/ and val/ class folders",
    DatasetSpec(
        _folder_info("imagenet1k", 1000, 224, 1_281_167),
        _FOLDER_LAYOUT + " (1000 wnid folders each)",
        layouts.locate_class_folders,
        resizable=True,
        manual=_IMAGENET_HOWTO,
    ),
    aliases=("imagenet", "imagenet-1k", "in1k"),
)
_SUBSET_TRAIN_SIZES = {"imagenette": 9_469, "imagewoof": 9_025}
for _subset, _what in (
    ("imagenette", "easy classes"),
    ("imagewoof", "dog breeds"),
    ("imagemeow", "cat breeds"),
    ("imagesquawk", "birds"),
    ("imagefruit", "fruits"),
    ("imageyellow", "yellow things"),
):
    _register(
        _subset,
        f"ImageNet subset of 10 {_what} (128x128) from train/ and val/ class folders",
        DatasetSpec(
            _folder_info(_subset, 10, 128, _SUBSET_TRAIN_SIZES.get(_subset)),
            _FOLDER_LAYOUT + " (10 class folders each)",
            layouts.locate_class_folders,
            resizable=True,
            manual=_SUBSET_HOWTO.replace("{name}", _subset),
        ),
    )
_register(
    "imagefolder",
    "any train/ + val/ class-folder tree (classes = sorted folder names, default 32x32, ImageNet statistics)",
    DatasetSpec(
        _folder_info("imagefolder", 0, 32, None),
        _FOLDER_LAYOUT,
        layouts.locate_class_folders,
        resizable=True,
        manual=(
            "'imagefolder' is your own tree: lay it out as "
            "{root}/train/<class>/<image> and {root}/val/<class>/<image>"
        ),
    ),
)

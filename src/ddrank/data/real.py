"""Real datasets: a registry of names, loaders for their on-disk layouts, and a tensor cache.

Every dataset loads as uint8 ``[N, C, H, W]`` train and test tensors plus int64 labels. Image
trees and pickles are decoded once and cached as ``.npy`` files under ``cache_dir("datasets")``;
later loads memory-map the cache, so even ImageNet-1K need not fit in RAM. ``digits`` ships with
scikit-learn and needs neither a data root nor a cache.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ddrank.errors import ConfigError, InputError
from ddrank.paths import cache_dir
from ddrank.registry import Registry

try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

__all__ = ["DATASETS", "DatasetInfo", "DatasetSpec", "RealData", "dataset_info", "load_real", "normalize"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped whenever the decoded content or the cache layout changes, so old caches are rebuilt."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_DECODE_CHUNK = 256
_HASH_CHUNK_BYTES = 1 << 26
_META_FILE = "meta.json"
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a normaliser need to know about a dataset, without loading it.

    ``mean``/``std`` are per channel on [0, 1] pixel values. For ``imagefolder`` the class count
    is 0 until the tree has been read (``load_real`` returns it filled in).
    """

    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_root: bool


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
class _Source:
    """The files a dataset's content depends on, and how to write its cached split arrays."""

    files: list[Path]
    write: Callable[[Path], list[str]]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its defaults, its expected layout (shown in errors) and its reader."""

    info: DatasetInfo
    layout: str
    locate: Callable[[Path, DatasetInfo], _Source] | None
    resizable: bool = False
    stats_options: tuple[str, ...] = ()


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


def load_real(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    size: int | None = None,
    stats: str | None = None,
) -> RealData:
    """Load dataset ``name`` from ``root`` (decoding it once into the on-disk cache).

    ``size`` sets the resolution of image-folder datasets; ``stats`` as in :func:`dataset_info`.
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
    if root is None:
        raise InputError(f"dataset {info.name!r} needs --data-root (root=): the folder holding {spec.layout}")
    directory = Path(root).expanduser().resolve()
    if not directory.is_dir():
        raise InputError(
            f"data root {directory} for dataset {info.name!r} does not exist; expected {spec.layout}"
        )
    source = spec.locate(directory, info)
    return _load_cached(info, directory, source)


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
    return (images_uint8.float() / 255 - mean) / std


# --- digits -------------------------------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


def _load_digits(info: DatasetInfo) -> RealData:
    """scikit-learn's 8x8 digits, 0..16 scaled to uint8, split 70/30 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return RealData(
        info=info,
        train_images=torch.from_numpy(train_images),
        train_labels=torch.from_numpy(train_labels),
        test_images=torch.from_numpy(test_images),
        test_labels=torch.from_numpy(test_labels),
        classes=[str(digit) for digit in range(10)],
        fingerprint=_fingerprint([(train_images, train_labels), (test_images, test_labels)]),
    )


# --- cache --------------------------------------------------------------------------------------


def _load_cached(info: DatasetInfo, root: Path, source: _Source) -> RealData:
    """Open the cache entry for this exact source tree, writing it first if it is missing."""
    root_key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    listing = hashlib.sha256(f"format {CACHE_FORMAT}\nsize {info.size}\n".encode())
    for path in source.files:
        stat = path.stat()
        listing.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    prefix = f"{info.name}-{info.size}px-{root_key}-"
    base = cache_dir("datasets")
    entry = base / (prefix + listing.hexdigest()[:16])
    if not (entry / _META_FILE).is_file():
        _write_cache(entry, source, info, root)
        for stale in base.glob(prefix + "*"):
            if stale != entry:
                shutil.rmtree(stale, ignore_errors=True)
    return _open_cache(entry, info)


def _write_cache(entry: Path, source: _Source, info: DatasetInfo, root: Path) -> None:
    """Decode into a temporary folder and rename it into place, so a crash never leaves half a cache."""
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        logger.info("decoding dataset %s from %s into %s", info.name, root, entry)
        classes = source.write(staging)
        splits = [_open_split_arrays(staging, split) for split in _SPLITS]
        meta = {
            "format": CACHE_FORMAT,
            "dataset": info.name,
            "root": str(root),
            "size": info.size,
            "classes": classes,
            "fingerprint": _fingerprint(splits),
            "counts": {split: len(labels) for split, (_, labels) in zip(_SPLITS, splits, strict=True)},
        }
        del splits
        (staging / _META_FILE).write_text(json.dumps(meta, indent=1))
        if entry.exists() and not (entry / _META_FILE).is_file():
            shutil.rmtree(entry)
        try:
            os.replace(staging, entry)
        except OSError:
            if not (entry / _META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _open_split_arrays(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images = np.load(directory / f"{split}_images.npy", mmap_mode="r")
    return images, np.load(directory / f"{split}_labels.npy")


def _open_cache(entry: Path, info: DatasetInfo) -> RealData:
    try:
        meta = json.loads((entry / _META_FILE).read_text())
        tensors: dict[str, torch.Tensor] = {}
        for split in _SPLITS:
            images, labels = _open_split_arrays(entry, split)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                tensors[f"{split}_images"] = torch.from_numpy(images)
            tensors[f"{split}_labels"] = torch.from_numpy(labels)
        classes = list(meta["classes"])
        fingerprint = str(meta["fingerprint"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"cached dataset {entry} is unreadable ({exc}); delete that folder and load again"
        ) from exc
    return RealData(
        info=replace(info, num_classes=len(classes)), classes=classes, fingerprint=fingerprint, **tensors
    )


def _fingerprint(splits: Iterable[tuple[np.ndarray, np.ndarray]]) -> str:
    """sha256 over each split's shapes, image bytes and little-endian int64 labels, in train/test order."""
    digest = hashlib.sha256()
    for images, labels in splits:
        digest.update(f"{list(images.shape)} {list(labels.shape)}\n".encode())
        rows = max(1, _HASH_CHUNK_BYTES // (images[0].nbytes if len(images) else 1))
        for start in range(0, len(images), rows):
            digest.update(np.ascontiguousarray(images[start : start + rows]).tobytes())
        digest.update(np.asarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


# --- CIFAR pickles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str


_CIFAR10 = _CifarLayout(
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
    "labels",
    "label_names",
)
_CIFAR100 = _CifarLayout("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names")

_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (module, "_reconstruct"): _np_multiarray._reconstruct
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{
        (module, "_frombuffer"): _np_numeric._frombuffer
        for module in ("numpy.core.numeric", "numpy._core.numeric")
    },
}


_UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name} (CIFAR files hold only numpy arrays, lists and bytes)"
            ) from None


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            content = _ArrayUnpickler(file, encoding="bytes").load()
    except _UNPICKLING_ERRORS as exc:
        raise InputError(f"cannot read {path} as a CIFAR python pickle: {exc}") from exc
    if not isinstance(content, dict):
        raise InputError(f"{path} holds a {type(content).__name__}, expected a CIFAR dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _cifar_field(path: Path, content: dict[str, Any], key: str) -> Any:
    if key not in content:
        raise InputError(f"{path} has no {key!r} entry (found {sorted(content)}); is it a CIFAR python file?")
    return content[key]


def _locate_cifar(layout: _CifarLayout, root: Path, info: DatasetInfo) -> _Source:
    """Find the batches folder (``root`` itself or ``root/<folder>``) and check every file is there."""
    batches = root / layout.folder if (root / layout.folder).is_dir() else root
    names = ", ".join((*layout.train_files, layout.test_file, layout.meta_file))
    if not (batches / layout.meta_file).is_file() and batches == root:
        raise InputError(
            f"no {info.name} files in {root}: expected {root / layout.folder}/ holding {names} "
            "(the python version of the dataset)"
        )
    files = [batches / file for file in (layout.meta_file, *layout.train_files, layout.test_file)]
    for path in files:
        if not path.is_file():
            raise InputError(f"{path} is missing: dataset {info.name!r} expects {batches}/ holding {names}")
    return _Source(files=files, write=partial(_write_cifar, layout, batches, info))


def _read_cifar_batch(path: Path, layout: _CifarLayout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path)
    data = np.asarray(_cifar_field(path, content, "data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise InputError(
            f"{path}: 'data' should be uint8 [N, 3072] (32x32 RGB planes), "
            f"got {data.dtype} {list(data.shape)}"
        )
    labels = np.asarray(_cifar_field(path, content, layout.label_key), dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise InputError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{path}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _write_cifar(layout: _CifarLayout, batches: Path, info: DatasetInfo, directory: Path) -> list[str]:
    meta_path = batches / layout.meta_file
    names = [
        name.decode("utf-8") if isinstance(name, bytes) else str(name)
        for name in _cifar_field(meta_path, _unpickle(meta_path), layout.names_key)
    ]
    if len(names) != info.num_classes:
        raise InputError(
            f"{meta_path} names {len(names)} classes, dataset {info.name!r} has {info.num_classes}"
        )
    parts = {
        "train": [_read_cifar_batch(batches / file, layout, info.num_classes) for file in layout.train_files],
        "test": [_read_cifar_batch(batches / layout.test_file, layout, info.num_classes)],
    }
    for split, batches_read in parts.items():
        np.save(directory / f"{split}_images.npy", np.concatenate([images for images, _ in batches_read]))
        np.save(directory / f"{split}_labels.npy", np.concatenate([labels for _, labels in batches_read]))
    return names


# --- image-folder trees -------------------------------------------------------------------------


@dataclass(frozen=True)
class _FolderTree:
    classes: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    metadata: list[Path]

    def source(self, size: int) -> _Source:
        images = [path for path, _ in self.train + self.test]
        return _Source(files=[*self.metadata, *images], write=partial(_write_folder_tree, self, size))


def _class_folders(directory: Path) -> list[str]:
    return sorted(
        entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith(".")
    )


def _images_under(directory: Path) -> list[Path]:
    """Image files below ``directory`` (any depth), ordered as torchvision's ImageFolder orders them."""
    found: list[tuple[str, str]] = []
    for parent, subfolders, names in os.walk(directory, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(
            (parent, name)
            for name in names
            if not name.startswith(".") and name.lower().endswith(_IMAGE_SUFFIXES)
        )
    return [Path(parent, name) for parent, name in sorted(found)]


def _labelled_images(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        images = _images_under(split_dir / name)
        if not images:
            raise InputError(
                f"class folder {split_dir / name} holds no images "
                f"(expected files ending in {', '.join(_IMAGE_SUFFIXES)})"
            )
        samples.extend((path, label) for path in images)
    return samples


def _preview(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def _check_train_classes(info: DatasetInfo, train_dir: Path, classes: list[str]) -> None:
    if not classes:
        raise InputError(f"{train_dir} holds no class folders; expected {train_dir}/<class>/<image>")
    if info.num_classes and len(classes) != info.num_classes:
        raise InputError(
            f"dataset {info.name!r} expects {info.num_classes} class folders in {train_dir}, "
            f"found {len(classes)}; use 'imagefolder' for other class sets"
        )


def _check_same_classes(train_dir: Path, classes: list[str], test_dir: Path, test_classes: list[str]) -> None:
    if test_classes == classes:
        return
    if not test_classes:
        raise InputError(
            f"{test_dir} holds no class folders; "
            f"expected {test_dir}/<class>/<image> with the classes of {train_dir}"
        )
    differences = []
    if missing := sorted(set(classes) - set(test_classes)):
        differences.append(f"missing from {test_dir.name}/: {_preview(missing)}")
    if extra := sorted(set(test_classes) - set(classes)):
        differences.append(f"only in {test_dir.name}/: {_preview(extra)}")
    raise InputError(f"class folders differ between {train_dir} and {test_dir}: {'; '.join(differences)}")


def _locate_class_folders(root: Path, info: DatasetInfo) -> _Source:
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test/``); classes are sorted folder names."""
    train_dir = root / "train"
    test_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        missing = (
            f"{train_dir} is missing"
            if not train_dir.is_dir()
            else f"neither {root}/val nor {root}/test exists"
        )
        raise InputError(
            f"dataset {info.name!r} expects a class-folder tree {root}/train/<class>/<image> and "
            f"{root}/val/<class>/<image> (or test/); {missing}"
        )
    classes = _class_folders(train_dir)
    _check_train_classes(info, train_dir, classes)
    _check_same_classes(train_dir, classes, test_dir, _class_folders(test_dir))
    tree = _FolderTree(classes, _labelled_images(train_dir, classes), _labelled_images(test_dir, classes), [])
    return tree.source(info.size)


def _locate_tinyimagenet(root: Path, info: DatasetInfo) -> _Source:
    """``train/<wnid>/[images/]*`` with ``val/`` as class folders or as ``images/`` + ``val_annotations.txt``.

    Classes are the sorted wnids (torchvision ImageFolder order, which published synthetic sets follow);
    ``wnids.txt``, when present, must list the same wnids.
    """
    if not (root / "train").is_dir() and (root / "tiny-imagenet-200" / "train").is_dir():
        root = root / "tiny-imagenet-200"
    train_dir, val_dir = root / "train", root / "val"
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise InputError(
                f"{folder} is missing: dataset {info.name!r} expects {root}/train/<wnid>/images/*.JPEG and "
                f"{root}/val/ (images/ + val_annotations.txt, or <wnid>/ class folders)"
            )
    classes = _class_folders(train_dir)
    metadata: list[Path] = []
    wnids_file = root / "wnids.txt"
    if wnids_file.is_file():
        listed = sorted(set(wnids_file.read_text().split()))
        if listed != classes:
            differences = [
                f"{label}: {_preview(names)}"
                for label, names in (
                    (f"listed in {wnids_file.name} but not in train/", sorted(set(listed) - set(classes))),
                    (f"in train/ but not listed in {wnids_file.name}", sorted(set(classes) - set(listed))),
                )
                if names
            ]
            raise InputError(
                f"{wnids_file} does not match the class folders of {train_dir}: {'; '.join(differences)}"
            )
        metadata.append(wnids_file)
    _check_train_classes(info, train_dir, classes)
    images_dir, annotations = val_dir / "images", val_dir / "val_annotations.txt"
    if images_dir.is_dir() and _class_folders(images_dir):
        _check_same_classes(train_dir, classes, images_dir, _class_folders(images_dir))
        test = _labelled_images(images_dir, classes)
    elif images_dir.is_dir():
        if not annotations.is_file():
            raise InputError(
                f"{annotations} is missing: {images_dir} holds images without class folders, which needs "
                "val_annotations.txt (tab-separated: file, wnid, box)"
            )
        test = _annotated_images(images_dir, annotations, classes)
        metadata.append(annotations)
    else:
        _check_same_classes(train_dir, classes, val_dir, _class_folders(val_dir))
        test = _labelled_images(val_dir, classes)
    tree = _FolderTree(classes, _labelled_images(train_dir, classes), test, metadata)
    return tree.source(info.size)


def _annotated_images(images_dir: Path, annotations: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """Validation images labelled by ``val_annotations.txt``, in the order the class-folder layout gives."""
    label_of = {wnid: label for label, wnid in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for line_number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise InputError(f"{annotations}:{line_number}: expected '<file>\\t<wnid>\\t...', got {line!r}")
        filename, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in label_of:
            raise InputError(f"{annotations}:{line_number}: class {wnid!r} has no folder in train/")
        if not (images_dir / filename).is_file():
            raise InputError(f"{annotations}:{line_number}: {images_dir / filename} does not exist")
        samples.append((filename, label_of[wnid]))
    if unseen := sorted(set(classes) - {classes[label] for _, label in samples}):
        raise InputError(f"{annotations} lists no validation image for classes {_preview(unseen)}")
    return [(images_dir / filename, label) for filename, label in sorted(samples, key=lambda s: (s[1], s[0]))]


def _decode_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 ``[3, size, size]``: shorter side resized to ``size`` (bilinear), then centre-cropped.

    Matches torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on PIL images.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image {path}: {exc}") from exc
    width, height = image.size
    if min(width, height) != size:
        if width <= height:
            image = image.resize((size, int(size * height / width)), Image.Resampling.BILINEAR)
        else:
            image = image.resize((int(size * width / height), size), Image.Resampling.BILINEAR)
        width, height = image.size
    if (width, height) != (size, size):
        left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image).transpose(2, 0, 1)


def _decode_chunk(samples: list[tuple[Path, int]], size: int, images: np.ndarray, start: int) -> None:
    """Decode ``samples[start : start + _DECODE_CHUNK]`` into their rows of ``images``."""
    for index in range(start, min(start + _DECODE_CHUNK, len(samples))):
        images[index] = _decode_image(samples[index][0], size)


def _write_folder_tree(tree: _FolderTree, size: int, directory: Path) -> list[str]:
    for split, samples in (("train", tree.train), ("test", tree.test)):
        images = np.lib.format.open_memmap(
            directory / f"{split}_images.npy", mode="w+", dtype=np.uint8, shape=(len(samples), 3, size, size)
        )
        with ThreadPoolExecutor() as pool:
            list(
                pool.map(partial(_decode_chunk, samples, size, images), range(0, len(samples), _DECODE_CHUNK))
            )
        images.flush()
        del images
        np.save(directory / f"{split}_labels.npy", np.array([label for _, label in samples], dtype=np.int64))
    return list(tree.classes)


# --- registry -----------------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_FOLDER_LAYOUT = "train/<class>/<image> and val/<class>/<image>"


def _register(
    name: str,
    description: str,
    info: DatasetInfo,
    layout: str,
    locate: Callable[[Path, DatasetInfo], _Source] | None,
    *,
    aliases: tuple[str, ...] = (),
    resizable: bool = False,
    stats_options: tuple[str, ...] = (),
) -> None:
    spec = DatasetSpec(info, layout, locate, resizable=resizable, stats_options=stats_options)
    DATASETS.add(name, spec, aliases=aliases, description=description)


def _folder_info(name: str, num_classes: int, size: int) -> DatasetInfo:
    return DatasetInfo(name, num_classes, 3, size, _IMAGENET_MEAN, _IMAGENET_STD, needs_root=True)


_register(
    "digits",
    "scikit-learn's bundled 8x8 handwritten digits (10 classes, 1,797 images); needs no download",
    DatasetInfo("digits", 10, 1, 8, (0.305604,), (0.375962,), needs_root=False),
    "nothing (bundled with scikit-learn)",
    None,
)
_register(
    "cifar10",
    "CIFAR-10 (10 classes, 32x32) from the python-pickle batches",
    DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), needs_root=True),
    "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
    partial(_locate_cifar, _CIFAR10),
    aliases=("cifar-10",),
)
_register(
    "cifar100",
    "CIFAR-100 (100 fine classes, 32x32) from the python pickles; stats='cifar10' for MTT/DATM normalisation",
    DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), needs_root=True),
    "cifar-100-python/ (train, test, meta)",
    partial(_locate_cifar, _CIFAR100),
    aliases=("cifar-100",),
    stats_options=("cifar10",),
)
_register(
    "tinyimagenet",
    "Tiny ImageNet (200 classes, 64x64); validation split as test",
    _folder_info("tinyimagenet", 200, 64),
    "tiny-imagenet-200/: train/<wnid>/images/*.JPEG, val/ (images/ + val_annotations.txt or class folders)",
    _locate_tinyimagenet,
    aliases=("tiny-imagenet", "tiny"),
    resizable=True,
)
_register(
    "imagenet1k",
    "ImageNet-1K (1000 classes, 224x224) from train/ and val/ class folders",
    _folder_info("imagenet1k", 1000, 224),
    _FOLDER_LAYOUT + " (1000 wnid folders each)",
    _locate_class_folders,
    aliases=("imagenet", "imagenet-1k", "in1k"),
    resizable=True,
)
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
        _folder_info(_subset, 10, 128),
        _FOLDER_LAYOUT + " (10 class folders each)",
        _locate_class_folders,
        resizable=True,
    )
_register(
    "imagefolder",
    "any train/ + val/ class-folder tree (classes = sorted folder names, default 32x32, ImageNet statistics)",
    _folder_info("imagefolder", 0, 32),
    _FOLDER_LAYOUT,
    _locate_class_folders,
    resizable=True,
)

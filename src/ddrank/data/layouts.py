"""Where each dataset's files lie under a data root, and how they become cached split arrays.

Each ``locate_*`` function checks a root's layout (naming what is missing) and returns a
:class:`~ddrank.data.base.Source`: the files the content depends on and a writer that decodes
them into ``{train,test}_{images,labels}.npy`` through the readers in :mod:`ddrank.data.readers`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ddrank.data import readers
from ddrank.data.base import DatasetInfo, Source
from ddrank.errors import DataError, InputError

_DECODE_CHUNK = 256


def _save_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    np.save(directory / f"{split}_images.npy", images)
    np.save(directory / f"{split}_labels.npy", labels)


# --- CIFAR python pickles -----------------------------------------------------------------------


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str


CIFAR10 = CifarLayout(
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
    "labels",
    "label_names",
)
CIFAR100 = CifarLayout("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names")


def locate_cifar(layout: CifarLayout, root: Path, info: DatasetInfo) -> Source:
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
    return Source(files=files, write=partial(_write_cifar, layout, batches, info))


def _write_cifar(layout: CifarLayout, batches: Path, info: DatasetInfo, directory: Path) -> list[str]:
    meta_path = batches / layout.meta_file
    names = [
        name.decode("utf-8") if isinstance(name, bytes) else str(name)
        for name in readers.pickle_field(meta_path, readers.unpickle_arrays(meta_path), layout.names_key)
    ]
    if len(names) != info.num_classes:
        raise DataError(
            f"{meta_path} names {len(names)} classes, dataset {info.name!r} has {info.num_classes}"
        )
    parts = {
        "train": [
            readers.read_cifar_batch(batches / f, layout.label_key, info.num_classes)
            for f in layout.train_files
        ],
        "test": [readers.read_cifar_batch(batches / layout.test_file, layout.label_key, info.num_classes)],
    }
    for split, read in parts.items():
        _save_split(
            directory, split, np.concatenate([i for i, _ in read]), np.concatenate([lab for _, lab in read])
        )
    return names


# --- IDX files (MNIST, Fashion-MNIST, KMNIST) ---------------------------------------------------


@dataclass(frozen=True)
class IdxLayout:
    """torchvision's layout ``<root>/<folder>/raw/`` and the torchvision class whose ``classes`` name them."""

    folder: str
    torchvision_class: str


MNIST = IdxLayout("MNIST", "MNIST")
FASHION_MNIST = IdxLayout("FashionMNIST", "FashionMNIST")
KMNIST = IdxLayout("KMNIST", "KMNIST")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_file(folder: Path, name: str) -> Path | None:
    """The plain file if present, else the gzip'd one, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate_idx(layout: IdxLayout, root: Path, info: DatasetInfo) -> Source:
    """``root/<folder>/raw/`` (or ``root/raw/`` or ``root``) holding the four IDX files, gzip'd or not."""
    names = [name for pair in _IDX_FILES.values() for name in pair]
    expected = root / layout.folder / "raw"
    for folder in (expected, root / "raw", root):
        found = {name: _idx_file(folder, name) for name in names}
        if any(found.values()):
            break
    missing = [name for name, path in found.items() if path is None]
    if missing:
        where = folder if any(found.values()) else expected
        raise InputError(
            f"{where} lacks {', '.join(missing)} (plain or .gz): dataset {info.name!r} expects "
            f"{expected}/ holding the four IDX files, as torchvision's {layout.torchvision_class} keeps them"
        )
    files = [path for path in found.values() if path is not None]
    return Source(files=files, write=partial(_write_idx, layout, found, info))


def _write_idx(
    layout: IdxLayout, found: dict[str, Path | None], info: DatasetInfo, directory: Path
) -> list[str]:
    import torchvision.datasets

    for split, (image_name, label_name) in _IDX_FILES.items():
        image_path, label_path = found[image_name], found[label_name]
        assert image_path is not None and label_path is not None
        images = readers.read_idx(image_path, (None, info.size, info.size))
        labels = readers.read_idx(label_path, (None,)).astype(np.int64)
        if len(labels) != len(images):
            raise DataError(
                f"{label_path} holds {len(labels)} labels for the {len(images)} images of {image_path}"
            )
        readers.check_labels(label_path, labels, info.num_classes)
        _save_split(directory, split, images[:, None], labels)
    return list(getattr(torchvision.datasets, layout.torchvision_class).classes)


# --- SVHN .mat files ----------------------------------------------------------------------------

_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def locate_svhn(root: Path, info: DatasetInfo) -> Source:
    """``root/{train,test}_32x32.mat`` as torchvision keeps them (or under ``root/svhn``)."""
    folder = (
        root / "svhn" if not (root / _SVHN_FILES["train"]).is_file() and (root / "svhn").is_dir() else root
    )
    files = [folder / name for name in _SVHN_FILES.values()]
    for path in files:
        if not path.is_file():
            raise InputError(
                f"{path} is missing: dataset {info.name!r} expects {folder}/ holding "
                f"{', '.join(_SVHN_FILES.values())} (the cropped-digits format)"
            )
    return Source(files=files, write=partial(_write_svhn, folder))


def _write_svhn(folder: Path, directory: Path) -> list[str]:
    for split, name in _SVHN_FILES.items():
        _save_split(directory, split, *readers.read_svhn_mat(folder / name))
    return [str(digit) for digit in range(10)]


# --- image-folder trees -------------------------------------------------------------------------


@dataclass(frozen=True)
class _FolderTree:
    classes: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    metadata: list[Path]

    def source(self, size: int) -> Source:
        images = [path for path, _ in self.train + self.test]
        return Source(files=[*self.metadata, *images], write=partial(_write_folder_tree, self, size))


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
            if not name.startswith(".") and name.lower().endswith(readers.IMAGE_SUFFIXES)
        )
    return [Path(parent, name) for parent, name in sorted(found)]


def _labelled_images(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        images = _images_under(split_dir / name)
        if not images:
            raise InputError(
                f"class folder {split_dir / name} holds no images "
                f"(expected files ending in {', '.join(readers.IMAGE_SUFFIXES)})"
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


def locate_class_folders(root: Path, info: DatasetInfo) -> Source:
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


def locate_tinyimagenet(root: Path, info: DatasetInfo) -> Source:
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


def _decode_chunk(samples: list[tuple[Path, int]], size: int, images: np.ndarray, start: int) -> None:
    """Decode ``samples[start : start + _DECODE_CHUNK]`` into their rows of ``images``."""
    for index in range(start, min(start + _DECODE_CHUNK, len(samples))):
        images[index] = readers.decode_image(samples[index][0], size)


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

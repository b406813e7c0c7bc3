"""The decoded-split cache: uint8 ``.npy`` arrays per dataset source tree, keyed by its files.

A dataset's files are decoded once into ``cache_dir("datasets")/<name>-<size>px-<root>-<listing>``,
where the listing hashes every source file's path, size and mtime, so a changed tree gets a new
entry (and the stale one is removed). Entries are written into a temporary folder and renamed
into place, so an interrupted decode never leaves half a cache. Later loads memory-map the arrays.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ddrank.data.base import DatasetInfo, RealData, Source
from ddrank.errors import InputError
from ddrank.fingerprint import Part
from ddrank.fingerprint import fingerprint as content_hash
from ddrank.paths import cache_dir

__all__ = ["CACHE_FORMAT", "fingerprint", "load_cached"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped whenever the decoded content or the cache layout changes, so old caches are rebuilt."""

SPLITS = ("train", "test")
_META_FILE = "meta.json"


def load_cached(info: DatasetInfo, root: Path, source: Source) -> RealData:
    """Open the cache entry for this exact source tree, writing it first if it is missing."""
    root_key = content_hash(str(root), length=12)
    listing = [f"format {CACHE_FORMAT}\nsize {info.size}\n"]
    for path in source.files:
        stat = path.stat()
        listing.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
    prefix = f"{info.name}-{info.size}px-{root_key}-"
    base = cache_dir("datasets")
    entry = base / (prefix + content_hash(*listing, length=16))
    if not (entry / _META_FILE).is_file():
        _write(entry, source, info, root)
        for stale in base.glob(prefix + "*"):
            if stale != entry:
                shutil.rmtree(stale, ignore_errors=True)
    return _open(entry, info)


def fingerprint(splits: Iterable[tuple[np.ndarray, np.ndarray]]) -> str:
    """The content hash over each split's shapes, image bytes and little-endian int64 labels, in order."""
    parts: list[Part] = []
    for images, labels in splits:
        parts += [f"{list(images.shape)} {list(labels.shape)}\n", images, np.asarray(labels, dtype="<i8")]
    return content_hash(*parts)


def _write(entry: Path, source: Source, info: DatasetInfo, root: Path) -> None:
    """Decode into a temporary folder and rename it into place, so a crash never leaves half a cache."""
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        logger.info("decoding dataset %s from %s into %s", info.name, root, entry)
        classes = source.write(staging)
        splits = [_split_arrays(staging, split) for split in SPLITS]
        meta = {
            "format": CACHE_FORMAT,
            "dataset": info.name,
            "root": str(root),
            "size": info.size,
            "classes": classes,
            "fingerprint": fingerprint(splits),
            "counts": {split: len(labels) for split, (_, labels) in zip(SPLITS, splits, strict=True)},
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


def _split_arrays(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images = np.load(directory / f"{split}_images.npy", mmap_mode="r")
    return images, np.load(directory / f"{split}_labels.npy")


def _open(entry: Path, info: DatasetInfo) -> RealData:
    try:
        meta = json.loads((entry / _META_FILE).read_text())
        tensors: dict[str, torch.Tensor] = {}
        for split in SPLITS:
            images, labels = _split_arrays(entry, split)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                tensors[f"{split}_images"] = torch.from_numpy(images)
            tensors[f"{split}_labels"] = torch.from_numpy(labels)
        classes = list(meta["classes"])
        content_hash = str(meta["fingerprint"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"cached dataset {entry} is unreadable ({exc}); delete that folder and load again"
        ) from exc
    return RealData(
        info=replace(info, num_classes=len(classes)), classes=classes, fingerprint=content_hash, **tensors
    )

"""Synthetic sets: read every published on-disk format into one tensor form, then check it against
the dataset and protocol so that bad input fails with a clear message before anything trains.

:func:`load_synthetic` reads (tensors, ``.pt`` files, DATM/MTT folders, DC/DSA/DM result files,
``.npz`` archives, class-folder image trees); :func:`validate_synthetic` checks shapes, labels and
values against a dataset's classes, channels and the protocol's image size.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ddrank.errors import InputError
from ddrank.registry import Registry

Space = Literal["pixel", "normalized", "zca"]
SPACES: tuple[str, ...] = get_args(Space)
MEMORY = "<memory>"

IMAGE_KEYS = ("images", "data", "x")
LABEL_KEYS = ("labels", "y")
DATM_IMAGES, DATM_LABELS, DATM_LR = "images_best.pt", "labels_best.pt", "lr_best.pt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
GRAYSCALE_MODES = ("1", "L", "LA")
DIRECTORY_FORMATS = ("datm", "imagefolder")


@dataclass
class SyntheticSet:
    """A synthetic set as loaded: images, optional labels and learning rate, and where it came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    lr: float | None
    space: Space | None
    source: str
    format: str

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the images, labels and lr: the same content gives the same hash."""
        digest = hashlib.sha256()
        _hash_tensor(digest, "images", self.images)
        if self.labels is not None:
            _hash_tensor(digest, "labels", self.labels)
        if self.lr is not None:
            digest.update(f"lr={float(self.lr)!r};".encode())
        return digest.hexdigest()


@dataclass
class ValidatedSet:
    """A synthetic set checked against a dataset and protocol, with its hard labels resolved."""

    images: torch.Tensor
    hard_labels: torch.Tensor
    soft_labels: torch.Tensor | None
    ipc: int
    class_counts: list[int]
    lr: float | None
    space: Space | None
    source: str
    format: str
    fingerprint: str


@dataclass
class _Parts:
    """Raw objects read from a file, before conversion to the tensor form."""

    images: Any
    labels: Any = None
    lr: Any = None


FORMATS: Registry[Callable[[Path, bool], _Parts]] = Registry("format")


def _hash_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    data = tensor.detach().cpu().contiguous()
    digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy())


def _pickle_refusal(path: Path, reason: str) -> str:
    return (
        f"{path} needs full unpickling{reason}, which can execute arbitrary code; "
        "pass allow_pickle=True (command line --allow-pickle) only for files you trust"
    )


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    """``torch.load`` on the CPU, refusing files that need full unpickling unless allowed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        message = str(e)
        if not allow_pickle and ("Unsupported global" in message or "can still be loaded" in message):
            found = re.search(r"GLOBAL (\S+)", message)
            raise InputError(
                _pickle_refusal(path, f" (it references {found.group(1)})" if found else "")
            ) from e
        raise InputError(f"cannot read {path} as a torch file: {message.splitlines()[-1].strip()}") from e
    except Exception as e:
        raise InputError(f"cannot read {path} as a torch file: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def _numpy_errors(path: Path) -> Iterator[None]:
    """Turn numpy's read errors into InputError, naming the pickle flag when that is the cause."""
    try:
        yield
    except InputError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise InputError(_pickle_refusal(path, " (it holds object arrays)")) from e
        raise InputError(f"cannot read {path} as a numpy file: {e}") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read {path} as a numpy file: {e}") from e


def _as_images(images: Any, source: str) -> tuple[torch.Tensor, bool]:
    """Float32 CPU ``[N, C, H, W]`` images, and whether they were integer pixels (now scaled to [0, 1])."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        if images.dtype.kind not in "biuf":
            raise InputError(
                f"synthetic set {source}: images have numpy dtype {images.dtype}; expected numbers"
            )
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise InputError(
            f"synthetic set {source}: images are a {type(images).__name__}; expected a tensor [N, C, H, W]"
        )
    if images.dim() != 4:
        raise InputError(
            f"synthetic set {source}: images have shape {list(images.shape)} ({images.dim()}-D); "
            "expected 4-D [N, C, H, W]"
        )
    images = images.detach().cpu()
    if images.dtype == torch.bool or images.is_complex():
        raise InputError(f"synthetic set {source}: images have dtype {images.dtype}; expected float or uint8")
    if images.is_floating_point():
        return images.to(torch.float32).contiguous(), False
    if images.dtype != torch.uint8 and images.numel() and (images.min() < 0 or images.max() > 255):
        raise InputError(
            f"synthetic set {source}: integer images must hold pixel values in 0..255; "
            f"got {int(images.min())}..{int(images.max())}"
        )
    return (images.to(torch.float32) / 255.0).contiguous(), True


def _as_labels(labels: Any, source: str) -> torch.Tensor | None:
    """Hard labels as int64 ``[N]`` or soft labels as float32 ``[N, K]``; None stays None."""
    if labels is None:
        return None
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "biuf":
            raise InputError(
                f"synthetic set {source}: labels have numpy dtype {labels.dtype}; expected numbers"
            )
        labels = torch.from_numpy(np.ascontiguousarray(labels))
    elif isinstance(labels, list | tuple):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"synthetic set {source}: labels are not a numeric array: {e}") from e
    if not isinstance(labels, torch.Tensor):
        raise InputError(
            f"synthetic set {source}: labels are a {type(labels).__name__}; "
            "expected a tensor of class indices [N] or soft labels [N, K]"
        )
    labels = labels.detach().cpu()
    shape = list(labels.shape)
    if labels.dtype == torch.bool or labels.is_complex():
        raise InputError(
            f"synthetic set {source}: labels have dtype {labels.dtype}; "
            "expected integer class indices [N] or float soft labels [N, K]"
        )
    if not labels.is_floating_point():
        if labels.dim() != 1:
            raise InputError(
                f"synthetic set {source}: integer labels have shape {shape}; expected class indices [N]"
            )
        return labels.to(torch.int64)
    if labels.dim() == 2:
        return labels.to(torch.float32).contiguous()
    if labels.dim() == 1:
        if bool(torch.isfinite(labels).all()) and bool((labels == labels.round()).all()):
            return labels.to(torch.int64)
        raise InputError(
            f"synthetic set {source}: 1-D float labels are not whole class indices; "
            "soft labels must have shape [N, K]"
        )
    raise InputError(
        f"synthetic set {source}: float labels have shape {shape}; expected soft labels [N, K] "
        "or class indices [N]"
    )


def _as_lr(lr: Any, source: str) -> float | None:
    """The shipped learning rate as a positive finite float; None stays None."""
    if lr is None:
        return None
    if isinstance(lr, torch.Tensor):
        lr = lr.detach().to("cpu", torch.float64).numpy()
    if isinstance(lr, np.ndarray | np.generic):
        if lr.size != 1:
            raise InputError(f"synthetic set {source}: lr has shape {list(lr.shape)}; expected one number")
        lr = lr.item()
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise InputError(f"synthetic set {source}: lr is a {type(lr).__name__}; expected a number")
    if not math.isfinite(lr) or lr <= 0:
        raise InputError(f"synthetic set {source}: lr must be a positive finite number; got {lr}")
    return float(lr)


def _check_space(space: Any) -> None:
    if space is not None and space not in SPACES:
        raise InputError(f"space must be one of {', '.join(SPACES)} or None; got {space!r}")


@FORMATS.register("tensor", description="a tensor or array [N, C, H, W] in memory, or a bare one in .npy/.pt")
def _load_tensor_file(path: Path, allow_pickle: bool) -> _Parts:
    if path.suffix.lower() == ".npy":
        with _numpy_errors(path):
            return _Parts(np.load(path, allow_pickle=allow_pickle))
    images = _torch_load(path, allow_pickle)
    if not isinstance(images, torch.Tensor | np.ndarray):
        raise InputError(
            f"{path} holds a {type(images).__name__}, not a bare tensor; use format 'pt' for dicts"
        )
    return _Parts(images)


def _pt_parts(obj: Any, path: Path) -> _Parts:
    if isinstance(obj, torch.Tensor | np.ndarray):
        return _Parts(obj)
    if isinstance(obj, dict):
        image_key = next((k for k in IMAGE_KEYS if k in obj), None)
        if image_key is None:
            raise InputError(
                f"{path} holds a dict with keys {sorted(map(str, obj))}; expected the images under one of "
                f"{', '.join(map(repr, IMAGE_KEYS))} (labels under 'labels' or 'y', learning rate under 'lr')"
            )
        label_key = next((k for k in LABEL_KEYS if k in obj), None)
        return _Parts(obj[image_key], obj[label_key] if label_key else None, obj.get("lr"))
    raise InputError(
        f"{path} holds a {type(obj).__name__}; expected a tensor [N, C, H, W] or a dict with 'images'"
    )


@FORMATS.register(
    "pt", aliases=("pth",), description="a .pt/.pth file: a tensor, or a dict of images, labels, lr"
)
def _load_pt(path: Path, allow_pickle: bool) -> _Parts:
    return _pt_parts(_torch_load(path, allow_pickle), path)


def _looks_like_dc(obj: Any) -> bool:
    return isinstance(obj, dict) and ("accs_all_exps" in obj or isinstance(obj.get("data"), list | tuple))


def _dc_parts(obj: Any, path: Path) -> _Parts:
    if not isinstance(obj, dict) or "data" not in obj:
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise InputError(
            f"{path} is not a DC/DSA/DM result file: it has no 'data' entry (found {keys}); "
            "expected {'data': [[images, labels], ...]}"
        )
    data = obj["data"]
    if not isinstance(data, list | tuple) or not data:
        raise InputError(f"{path}: 'data' must be a non-empty list of [images, labels] pairs")
    last = data[-1]
    if not isinstance(last, list | tuple) or len(last) != 2:
        raise InputError(f"{path}: the last entry of 'data' is not an [images, labels] pair")
    return _Parts(last[0], last[1])


@FORMATS.register(
    "dc",
    aliases=("dsa", "dm"),
    description="a DC/DSA/DM result file {'data': [[images, labels], ...]}; last experiment",
)
def _load_dc(path: Path, allow_pickle: bool) -> _Parts:
    return _dc_parts(_torch_load(path, allow_pickle), path)


@FORMATS.register(
    "datm", aliases=("mtt",), description="a DATM/MTT folder: images_best.pt, labels_best.pt, lr_best.pt"
)
def _load_datm(path: Path, allow_pickle: bool) -> _Parts:
    if not (path / DATM_IMAGES).is_file():
        raise InputError(
            f"{path} has no {DATM_IMAGES}; a DATM/MTT folder holds {DATM_IMAGES} "
            f"and optionally {DATM_LABELS} and {DATM_LR}"
        )

    def optional(name: str) -> Any:
        return _torch_load(path / name, allow_pickle) if (path / name).is_file() else None

    return _Parts(_torch_load(path / DATM_IMAGES, allow_pickle), optional(DATM_LABELS), optional(DATM_LR))


@FORMATS.register("npz", description="a .npz archive with 'images' (NHWC or NCHW) and optional 'labels'")
def _load_npz(path: Path, allow_pickle: bool) -> _Parts:
    with _numpy_errors(path):
        archive = np.load(path, allow_pickle=allow_pickle)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{path} is not a .npz archive")
        with archive:
            return _npz_parts(archive, path)


def _npz_parts(archive: np.lib.npyio.NpzFile, path: Path) -> _Parts:
    if "images" not in archive.files:
        raise InputError(f"{path} has no 'images' array (arrays: {', '.join(archive.files) or 'none'})")
    labels = archive["labels"] if "labels" in archive.files else None
    return _Parts(archive["images"], labels, archive["lr"] if "lr" in archive.files else None)


def _class_folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def _class_indices(names: list[str]) -> dict[str, int]:
    """Trailing digits give the class (``new007`` → 7) when every name has them; else sorted position."""
    matches = [re.search(r"(\d+)$", name) for name in names]
    if not all(matches):
        return {name: i for i, name in enumerate(sorted(names))}
    indices: dict[str, int] = {}
    owner: dict[int, str] = {}
    for name, match in zip(names, matches, strict=True):
        index = int(match.group(1))
        if index in owner:
            raise InputError(f"class folders {owner[index]!r} and {name!r} both end in class number {index}")
        indices[name], owner[index] = index, name
    return indices


def _no_layout(path: Path) -> InputError:
    return InputError(
        f"{path} matches no known synthetic-set layout: looked for {DATM_IMAGES} (DATM/MTT folder) and "
        f"for class folders holding image files ({', '.join(IMAGE_SUFFIXES)}) (SRe2L/RDED tree)"
    )


@FORMATS.register(
    "imagefolder",
    aliases=("sre2l", "rded"),
    description="class folders of image files (SRe2L new000/, RDED 00000/)",
)
def _load_imagefolder(path: Path, allow_pickle: bool) -> _Parts:
    folders = _class_folders(path)
    indices = _class_indices([folder.name for folder in folders])
    files = [(indices[folder.name], file) for folder in folders for file in _image_files(folder)]
    if not files:
        raise _no_layout(path)
    first: tuple[Path, tuple[int, int]] | None = None
    grayscale = True
    for _, file in files:
        try:
            with Image.open(file) as image:
                size, mode = image.size, image.mode
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(f"cannot read image {file}: {e}") from e
        if first is None:
            first = (file, size)
        elif size != first[1]:
            raise InputError(
                f"{file} is {size[0]}x{size[1]} but {first[0]} is {first[1][0]}x{first[1][1]}; "
                "all images of a class-folder set must share one size"
            )
        grayscale = grayscale and mode in GRAYSCALE_MODES
    mode = "L" if grayscale else "RGB"
    arrays = []
    for _, file in files:
        try:
            with Image.open(file) as image:
                arrays.append(np.asarray(image.convert(mode), dtype=np.uint8))
        except OSError as e:
            raise InputError(f"cannot decode image {file}: {e}") from e
    stack = np.stack(arrays)
    stack = stack[:, None] if grayscale else stack.transpose(0, 3, 1, 2)
    labels = torch.tensor([index for index, _ in files], dtype=torch.int64)
    return _Parts(torch.from_numpy(np.ascontiguousarray(stack)), labels)


def _detect_directory(path: Path) -> str:
    if (path / DATM_IMAGES).is_file():
        return "datm"
    if any(_image_files(folder) for folder in _class_folders(path)):
        return "imagefolder"
    raise _no_layout(path)


def _read_path(path: Path, format: str | None, allow_pickle: bool) -> tuple[str, _Parts]:
    """Detect (unless given) the format of a file or folder and read it."""
    if not path.exists():
        raise InputError(f"synthetic set {path} does not exist")
    if path.is_dir():
        format = format or _detect_directory(path)
        if format not in DIRECTORY_FORMATS:
            raise InputError(f"format {format!r} reads a file, but {path} is a directory")
    elif format is None:
        suffix = path.suffix.lower()
        if suffix in (".pt", ".pth"):
            obj = _torch_load(path, allow_pickle)
            return ("dc", _dc_parts(obj, path)) if _looks_like_dc(obj) else ("pt", _pt_parts(obj, path))
        formats = {".npz": "npz", ".npy": "tensor"}
        if suffix not in formats:
            raise InputError(
                f"cannot tell the format of {path} from its suffix (known: .pt, .pth, .npz, .npy, a folder); "
                f"name it with format= (one of {', '.join(FORMATS.names())})"
            )
        format = formats[suffix]
    elif format in DIRECTORY_FORMATS:
        raise InputError(f"format {format!r} reads a folder, but {path} is a file")
    return format, FORMATS.get(format)(path, allow_pickle)


def _read_labels(labels: Any, allow_pickle: bool) -> Any:
    """Labels given separately: a tensor/array as is, or read from a .pt/.pth/.npy file."""
    if not isinstance(labels, str | os.PathLike):
        return labels
    path = Path(labels)
    if not path.is_file():
        raise InputError(f"labels file {path} does not exist")
    if path.suffix.lower() == ".npy":
        with _numpy_errors(path):
            return np.load(path, allow_pickle=allow_pickle)
    if path.suffix.lower() in (".pt", ".pth"):
        return _torch_load(path, allow_pickle)
    raise InputError(f"cannot read labels from {path}: expected a .pt, .pth or .npy file")


def load_synthetic(
    source: str | os.PathLike | torch.Tensor | np.ndarray | SyntheticSet,
    labels: str | os.PathLike | torch.Tensor | np.ndarray | None = None,
    *,
    format: str = "auto",
    lr: float | None = None,
    space: Space | None = None,
    allow_pickle: bool = False,
) -> SyntheticSet:
    """Read a synthetic set from memory, a file or a folder; given labels, lr and space override stored ones.

    Integer images are raw pixels and become float32 in [0, 1] with space "pixel".
    """
    forced = None if format == "auto" else FORMATS.canonical(format)
    _check_space(space)
    if isinstance(source, SyntheticSet):
        if forced not in (None, source.format):
            raise InputError(f"format={format!r} was given for a set already loaded as {source.format!r}")
        parts, name, fmt = _Parts(source.images, source.labels, source.lr), source.source, source.format
        space = space if space is not None else source.space
    elif isinstance(source, torch.Tensor | np.ndarray):
        if forced not in (None, "tensor"):
            raise InputError(
                f"format={format!r} reads a path; an in-memory tensor or array is format 'tensor'"
            )
        parts, name, fmt = _Parts(source), MEMORY, "tensor"
    elif isinstance(source, str | os.PathLike):
        fmt, parts = _read_path(Path(source), forced, allow_pickle)
        name = str(source)
    else:
        raise InputError(
            f"cannot load a synthetic set from a {type(source).__name__}; "
            "expected a path, a tensor, a numpy array or a SyntheticSet"
        )
    images, from_pixels = _as_images(parts.images, name)
    if from_pixels:
        if space not in (None, "pixel"):
            raise InputError(
                f"synthetic set {name}: integer images are raw pixels, but space={space!r} was given"
            )
        space = "pixel"
    return SyntheticSet(
        images=images,
        labels=_as_labels(_read_labels(labels, allow_pickle) if labels is not None else parts.labels, name),
        lr=_as_lr(lr if lr is not None else parts.lr, name),
        space=space,
        source=name,
        format=fmt,
    )


def _implied_labels(n: int, num_classes: int, ipc: int | None, where: str) -> torch.Tensor:
    """Class-major labels (IPC images of class 0, then class 1, ...) for a set shipped without labels."""
    if ipc is None:
        if n % num_classes:
            raise InputError(
                f"{where}: {n} images cannot be split evenly over {num_classes} classes "
                "(no labels given, so class-major order with N = classes x IPC is assumed); give labels"
            )
        ipc = n // num_classes
    elif n != num_classes * ipc:
        raise InputError(
            f"{where}: {n} images but {num_classes} classes x IPC {ipc} = {num_classes * ipc} "
            "(no labels given, so class-major order is assumed); give labels or the right ipc"
        )
    return torch.arange(num_classes, dtype=torch.int64).repeat_interleave(ipc)


def _check_hard_labels(hard: torch.Tensor, n: int, num_classes: int, where: str) -> None:
    if hard.shape[0] != n:
        raise InputError(f"{where}: {hard.shape[0]} hard labels for {n} images")
    outside = (hard < 0) | (hard >= num_classes)
    if bool(outside.any()):
        index = int(outside.nonzero()[0, 0])
        raise InputError(
            f"{where}: label {int(hard[index])} at index {index} is outside [0, {num_classes}) "
            f"({int(outside.sum())} labels out of range)"
        )


def _check_soft_labels(soft: torch.Tensor, n: int, num_classes: int, where: str) -> None:
    if soft.shape[0] != n:
        raise InputError(f"{where}: soft labels have shape {list(soft.shape)} but there are {n} images")
    if soft.shape[1] != num_classes:
        raise InputError(
            f"{where}: soft labels have {soft.shape[1]} columns but the dataset has {num_classes} classes"
        )
    nan, inf = int(torch.isnan(soft).sum()), int(torch.isinf(soft).sum())
    if nan or inf:
        raise InputError(f"{where}: soft labels hold {nan} NaN and {inf} Inf values")


def validate_synthetic(
    syn: SyntheticSet,
    *,
    num_classes: int,
    channels: int,
    size: int,
    ipc: int | None = None,
    resize: bool = False,
) -> ValidatedSet:
    """Check a synthetic set against the dataset (classes, channels) and the protocol (image size, IPC).

    Raises InputError with a message saying what is wrong and what to do; resizes only when ``resize``.
    """
    where = f"synthetic set {syn.source}"
    if ipc is not None and ipc <= 0:
        raise InputError(f"{where}: ipc must be a positive integer; got {ipc}")
    images, _ = _as_images(syn.images, syn.source)
    n, c, h, w = images.shape
    if n == 0:
        raise InputError(f"{where} is empty: it holds 0 images")
    if c != channels:
        raise InputError(
            f"{where}: images have {c} channels (shape {list(images.shape)}) but the dataset has {channels}"
        )
    nan, inf = int(torch.isnan(images).sum()), int(torch.isinf(images).sum())
    if nan or inf:
        raise InputError(f"{where}: images hold {nan} NaN and {inf} Inf values")
    if (h, w) != (size, size):
        if not resize:
            raise InputError(
                f"{where}: images are {h}x{w} but the protocol uses {size}x{size}; "
                "pass resize=True (command line --resize) to resize them"
            )
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    lr = _as_lr(syn.lr, syn.source)
    labels = _as_labels(syn.labels, syn.source)
    soft = None
    if labels is None:
        hard = _implied_labels(n, num_classes, ipc, where)
    elif labels.dtype == torch.int64:
        _check_hard_labels(labels, n, num_classes, where)
        hard = labels
    else:
        _check_soft_labels(labels, n, num_classes, where)
        # Soft-label sets (DATM, SRe2L, ...) are stored class-major; their learned logits need not
        # peak at the image's class, so the class comes from the order when it can (as DD-Ranking
        # does) and from the argmax only for sets that are not a whole number of images per class.
        soft = labels
        hard = _implied_labels(n, num_classes, ipc, where) if n % num_classes == 0 else labels.argmax(dim=1)
    counts = torch.bincount(hard, minlength=num_classes).tolist()
    empty = [k for k, count in enumerate(counts) if count == 0]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        which = f"class {shown} has" if len(empty) == 1 else f"classes {shown} have"
        raise InputError(f"{where}: {which} no image ({len(empty)} of {num_classes} classes are empty)")
    if ipc is not None and max(counts) != ipc:
        held = f"{min(counts)}..{max(counts)}" if min(counts) != max(counts) else str(max(counts))
        raise InputError(f"{where}: ipc={ipc} was given but the labels hold {held} images per class")
    return ValidatedSet(
        images=images.contiguous(),
        hard_labels=hard,
        soft_labels=soft,
        ipc=max(counts),
        class_counts=counts,
        lr=lr,
        space=syn.space,
        source=syn.source,
        format=syn.format,
        fingerprint=syn.fingerprint(),
    )

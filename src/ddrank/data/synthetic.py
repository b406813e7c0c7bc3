"""Synthetic sets: read every published on-disk format into one tensor form, then check it against
the dataset and protocol so that bad input fails with a clear message before anything trains.

:func:`load_synthetic` reads (tensors, ``.pt`` files, DATM/MTT folders, DC/DSA/DM result files,
``.npz`` archives, class-folder image trees); every file is first classified and size-checked from
its headers (:mod:`ddrank.data.files`), so an unsafe, damaged or oversized file is refused before
anything is unpickled or allocated. :func:`validate_synthetic` checks shapes, labels and values
against a dataset's classes, channels and the protocol's image size, and reports values that
contradict the declared space as :class:`ValueWarning`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ddrank.data.files import (
    DEFAULT_MAX_BYTES,
    FileInfo,
    FileKind,
    check_declared_size,
    check_image_size,
    classify,
    torch_pickle_globals,
)
from ddrank.errors import InputError, one_line, shown
from ddrank.registry import Registry

Space = Literal["pixel", "normalized", "zca"]
SPACES: tuple[str, ...] = get_args(Space)
MEMORY = "<memory>"

IMAGE_KEYS = ("images", "data", "x")
LABEL_KEYS = ("labels", "y")
DATM_IMAGES, DATM_LABELS, DATM_LR = "images_best.pt", "labels_best.pt", "lr_best.pt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # grey 16-bit PNG / TIFF (Pillow may say "I")
GRAYSCALE_MODES = ("1", "L", "LA", *SIXTEEN_BIT_MODES)
DIRECTORY_FORMATS = ("datm", "imagefolder")
TORCH_KINDS = (FileKind.TORCH_ZIP, FileKind.TORCH_LEGACY)
TORCH_FILE = "a torch file"
EXPECTED_BY_SUFFIX = {
    ".pt": TORCH_FILE,
    ".pth": TORCH_FILE,
    ".npz": "a numpy .npz archive",
    ".npy": "a numpy .npy file",
}
# Values this far from zero fit no image space (pixels, normalised or ZCA-whitened): training diverges.
ABSURD_MAGNITUDE = 1e6
# Float images reaching past this while none is below PIXEL_FLOOR look like 0..255 pixels.
PIXEL_255_CEILING = 255.5
LOOKS_255 = 20.0
PIXEL_FLOOR = -0.5
# Normalised sets with this many values and none negative are [0, 1] pixels declared normalised.
MIN_VALUES_FOR_SIGN_CHECK = 1000
IMAGE_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ValueWarning:
    """Values that contradict the declared space: shown as one line, refused under ``strict``.

    ``flag`` is the option that fixes it (None when only the data can be fixed).
    """

    message: str
    flag: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class SyntheticSet:
    """A synthetic set as loaded: images, optional labels and learning rate, and where it came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    lr: float | None
    space: Space | None
    source: str
    format: str
    warnings: tuple[ValueWarning, ...] = ()
    labels_source: str | None = None  # the labels file given beside the images, if any
    notes: tuple[str, ...] = ()
    """What a reader should know that is no warning (never refused under ``strict``): labels given
    separately that replace the labels stored with the images."""

    def label_where(self) -> str:
        """How messages about the labels name them: the labels file given beside the set, else the set."""
        where = f"synthetic set {shown(self.source)}"
        return where if self.labels_source is None else f"labels {shown(self.labels_source)} of {where}"

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
    warnings: tuple[ValueWarning, ...] = ()

    @property
    def uneven_counts(self) -> tuple[int, ...]:
        """Images per class when the classes differ in size (random subsets then match them), else ()."""
        return tuple(self.class_counts) if len(set(self.class_counts)) > 1 else ()


@dataclass
class _Parts:
    """Raw objects read from a file, before conversion to the tensor form."""

    images: Any
    labels: Any = None
    lr: Any = None


@dataclass(frozen=True)
class _Reading:
    """How files are read: whether full unpickling is allowed and the most bytes a file may declare."""

    allow_pickle: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES


FORMATS: Registry[Callable[[Path, _Reading], _Parts]] = Registry("format")


def _hash_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    data = tensor.detach().cpu().contiguous()
    digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy())


def _pickle_refusal(path: Path, reason: str) -> str:
    return (
        f"{shown(path)} needs full unpickling{reason}, which can execute arbitrary code; "
        "pass --allow-pickle (allow_pickle=True in Python) only for files you trust"
    )


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(map(shown, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _references(names: tuple[str, ...]) -> str:
    return f" (it references {_listed(names)})" if names else ""


def _unreadable(info: FileInfo, expected: str) -> InputError:
    """Why ``info``'s file cannot be read as ``expected``, saying what it is and what to do."""
    where, kind = info.shown, info.kind
    if kind is FileKind.TRUNCATED:
        return InputError(f"{where} is truncated: {info.detail}; copy or write it again")
    if kind is FileKind.EMPTY:
        return InputError(f"{where} is not {expected}: it is empty (0 bytes); copy or write it again")
    if kind is FileKind.TEXT:
        return InputError(
            f"{where} is not {expected} (looks like text); check that the path names the saved set"
        )
    if kind is FileKind.ZIP:
        members = ", ".join(info.members[:3]) + (", ..." if len(info.members) > 3 else "")
        return InputError(f"{where} is not {expected}: it is {kind.description} (members: {members})")
    what = kind.description if kind is not FileKind.UNKNOWN else (info.detail or kind.description)
    return InputError(
        f"{where} is not {expected} ({what}); save the set with torch.save, numpy.save or numpy.savez"
    )


def _read_file(path: Path, reading: _Reading, expected: str, info: FileInfo | None = None) -> Any:
    """Classify, size-check and read one file: a torch object, a numpy array or a dict of numpy arrays.

    ``expected`` names what the caller wants ("a torch file", "a numpy .npz archive") for messages.
    """
    info = info or classify(path)
    kind = info.kind
    if kind is FileKind.PICKLE:
        if not reading.allow_pickle:
            listed = f" and references {_listed(info.globals)}" if info.globals else ""
            raise InputError(_pickle_refusal(path, f" (it is {kind.description}{listed})"))
        check_declared_size(info, reading.max_bytes)
        return _plain_pickle(info)
    if kind in TORCH_KINDS:
        check_declared_size(info, reading.max_bytes)
        return _torch_load(info, reading.allow_pickle)
    if kind is FileKind.NPY:
        if info.declared_bytes is None and not reading.allow_pickle:
            raise InputError(_pickle_refusal(path, " (it holds object arrays)"))
        check_declared_size(info, reading.max_bytes)
        with _numpy_errors(path):
            return np.load(path, allow_pickle=reading.allow_pickle)
    if kind is FileKind.NPZ:
        check_declared_size(info, reading.max_bytes)
        with _numpy_errors(path), np.load(path, allow_pickle=reading.allow_pickle) as archive:
            return {name: archive[name] for name in archive.files}
    raise _unreadable(info, expected)


def _plain_pickle(info: FileInfo) -> Any:
    """A plain pickle the user trusts (allow_pickle): read with the standard library."""
    try:
        with info.path.open("rb") as handle:
            return pickle.load(handle)
    except Exception as e:
        raise InputError(f"cannot read {info.shown} as a pickle: {type(e).__name__}: {one_line(e)}") from e


def _torch_load(info: FileInfo, allow_pickle: bool) -> Any:
    """``torch.load`` on the CPU, refusing files that need full unpickling unless allowed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on pickle protocols
            return torch.load(info.path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        if not allow_pickle:
            names = _unsafe(torch_pickle_globals(info))
            reason = _references(names) or f" ({_torch_reason(str(e))})"
            raise InputError(_pickle_refusal(info.path, reason)) from e
        raise InputError(f"cannot read {info.shown} as a torch file: {_torch_reason(str(e))}") from e
    except Exception as e:
        raise InputError(
            f"cannot read {info.shown} ({info.kind.description}): {type(e).__name__}: {one_line(e)}"
        ) from e


def _torch_reason(message: str) -> str:
    """The informative line of torch's weights-only refusal (its other lines are generic advice)."""
    for line in message.splitlines():
        found = re.search(r"(unsupported .*|trying to load .*)", line, re.IGNORECASE)
        if found:
            return one_line(found.group(1))
    return one_line(message)


def _unsafe(names: tuple[str, ...]) -> tuple[str, ...]:
    """The globals torch's weights-only loader does not allow by default (all of them if unknown)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):
        allowed = set()
    return tuple(name for name in names if name not in allowed)


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
        raise InputError(f"cannot read {shown(path)} as a numpy file: {one_line(e)}") from e
    except (OSError, EOFError, zipfile.BadZipFile, MemoryError, TypeError) as e:
        raise InputError(
            f"cannot read {shown(path)} as a numpy file: {type(e).__name__}: {one_line(e)}"
        ) from e


def _numpy_tensor(array: np.ndarray, where: str, what: str) -> torch.Tensor:
    """A numpy array of numbers as a CPU tensor (native byte order; long doubles as float64)."""
    if array.dtype.kind not in "biuf":
        raise InputError(f"{where}: {what} have numpy dtype {array.dtype}; expected numbers")
    if array.dtype.kind == "f" and array.dtype.itemsize > 8:
        array = array.astype(np.float64)
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(np.ascontiguousarray(array))
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{where}: {what} of numpy dtype {array.dtype}: {one_line(e)}") from e


def _as_images(images: Any, source: str) -> tuple[torch.Tensor, bool, tuple[ValueWarning, ...]]:
    """Float32 CPU ``[N, C, H, W]`` images, whether they were integer pixels (now scaled to [0, 1]),
    and warnings about integer values that cannot be meant as pixels."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        images = _numpy_tensor(images, f"synthetic set {source}", "images")
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
    if images.layout != torch.strided or images.is_quantized:
        kind = "quantized" if images.is_quantized else f"a {str(images.layout).removeprefix('torch.')} tensor"
        raise InputError(f"synthetic set {source}: images are {kind}; expected a dense float or uint8 tensor")
    if images.dtype == torch.bool or images.is_complex():
        raise InputError(f"synthetic set {source}: images have dtype {images.dtype}; expected float or uint8")
    if images.is_floating_point():
        return images.to(torch.float32).contiguous(), False, ()
    wide = images.to(torch.int64) if images.dtype != torch.uint8 else images
    low, high = (int(wide.min()), int(wide.max())) if images.numel() else (0, 0)
    if low < 0 or high > 255:
        raise InputError(
            f"synthetic set {source}: integer images must hold pixel values in 0..255; got {low}..{high}"
        )
    notes: tuple[ValueWarning, ...] = ()
    if images.numel() and high <= 1:
        notes = (
            ValueWarning(
                f"synthetic set {source}: integer images hold only 0 and 1, which read as 0..255 pixels are "
                "nearly black; if they are [0, 1] values, save them as floats and pass --space pixel",
                "--space pixel",
            ),
        )
    return (images.to(torch.float32) / 255.0).contiguous(), True, notes


def _as_labels(labels: Any, where: str) -> torch.Tensor | None:
    """Hard labels as int64 ``[N]`` or soft labels as float32 ``[N, K]``; None stays None."""
    if labels is None:
        return None
    if isinstance(labels, np.ndarray):
        labels = _numpy_tensor(labels, where, "labels")
    elif isinstance(labels, list | tuple):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"{where}: labels are not a numeric array: {e}") from e
    if not isinstance(labels, torch.Tensor):
        raise InputError(
            f"{where}: labels are a {type(labels).__name__}; "
            "expected a tensor of class indices [N] or soft labels [N, K]"
        )
    labels = labels.detach().cpu()
    shape = list(labels.shape)
    if labels.layout != torch.strided or labels.is_quantized:
        raise InputError(f"{where}: labels are not a dense tensor; save them as a plain tensor")
    if labels.dtype == torch.bool or labels.is_complex():
        raise InputError(
            f"{where}: labels have dtype {labels.dtype}; "
            "expected integer class indices [N] or float soft labels [N, K]"
        )
    if not labels.is_floating_point():
        if labels.dim() != 1:
            raise InputError(f"{where}: integer labels have shape {shape}; expected class indices [N]")
        return labels.to(torch.int64)
    if labels.dim() == 2:
        return labels.to(torch.float32).contiguous()
    if labels.dim() == 1:
        if bool(torch.isfinite(labels).all()) and bool((labels == labels.round()).all()):
            return labels.to(torch.int64)
        raise InputError(
            f"{where}: 1-D float labels are not whole class indices; soft labels must have shape [N, K]"
        )
    raise InputError(
        f"{where}: float labels have shape {shape}; expected soft labels [N, K] or class indices [N]"
    )


def _as_lr(lr: Any, source: str) -> float | None:
    """The shipped learning rate as a positive finite float; None stays None."""
    if lr is None:
        return None
    if isinstance(lr, torch.Tensor):
        if lr.is_complex() or lr.dtype == torch.bool or lr.is_quantized or lr.is_sparse:
            raise InputError(f"synthetic set {source}: lr has dtype {lr.dtype}; expected one number")
        lr = lr.detach().to("cpu", torch.float64).numpy()
    if isinstance(lr, np.ndarray | np.generic):
        if lr.dtype.kind not in "iuf":
            raise InputError(f"synthetic set {source}: lr has numpy dtype {lr.dtype}; expected one number")
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
def _load_tensor_file(path: Path, reading: _Reading) -> _Parts:
    images = _read_file(path, reading, "a tensor file (.pt or .npy)")
    if not isinstance(images, torch.Tensor | np.ndarray):
        raise InputError(
            f"{shown(path)} holds a {type(images).__name__}, not a bare tensor; use format 'pt' for dicts"
        )
    return _Parts(images)


def _keys(mapping: dict) -> str:
    keys = sorted(shown(key) for key in mapping)
    return "[" + ", ".join(map(repr, keys[:12])) + (", ...]" if len(keys) > 12 else "]")


def _pt_parts(obj: Any, path: Path) -> _Parts:
    if isinstance(obj, torch.Tensor | np.ndarray):
        return _Parts(obj)
    if isinstance(obj, dict):
        image_key = next((k for k in IMAGE_KEYS if k in obj), None)
        if image_key is None:
            raise InputError(
                f"{shown(path)} holds a dict with keys {_keys(obj)}; expected the images under one of "
                f"{', '.join(map(repr, IMAGE_KEYS))} (labels under 'labels' or 'y', learning rate under 'lr')"
            )
        label_key = next((k for k in LABEL_KEYS if k in obj), None)
        return _Parts(obj[image_key], obj[label_key] if label_key else None, obj.get("lr"))
    raise InputError(
        f"{shown(path)} holds a {type(obj).__name__}; expected a tensor [N, C, H, W] or a dict with 'images'"
    )


@FORMATS.register(
    "pt", aliases=("pth",), description="a .pt/.pth file: a tensor, or a dict of images, labels, lr"
)
def _load_pt(path: Path, reading: _Reading) -> _Parts:
    return _pt_parts(_read_file(path, reading, TORCH_FILE, _torch_file(path, "pt")), path)


def _torch_file(path: Path, format: str) -> FileInfo:
    """``path`` classified, refused when it is a numpy file named as a torch format (as npz refuses torch)."""
    info = classify(path)
    if info.kind in (FileKind.NPZ, FileKind.NPY):
        raise InputError(
            f"{info.shown} is {info.kind.description}, not a torch file (format {format!r}); leave the "
            "format to detection or name the right one"
        )
    return info


def _looks_like_dc(obj: Any) -> bool:
    return isinstance(obj, dict) and ("accs_all_exps" in obj or isinstance(obj.get("data"), list | tuple))


def _dc_parts(obj: Any, path: Path) -> _Parts:
    if not isinstance(obj, dict) or "data" not in obj:
        keys = _keys(obj) if isinstance(obj, dict) else type(obj).__name__
        raise InputError(
            f"{shown(path)} is not a DC/DSA/DM result file: it has no 'data' entry (found {keys}); "
            "expected {'data': [[images, labels], ...]}"
        )
    data = obj["data"]
    if not isinstance(data, list | tuple) or not data:
        raise InputError(f"{shown(path)}: 'data' must be a non-empty list of [images, labels] pairs")
    last = data[-1]
    if not isinstance(last, list | tuple) or len(last) != 2:
        raise InputError(f"{shown(path)}: the last entry of 'data' is not an [images, labels] pair")
    return _Parts(last[0], last[1])


@FORMATS.register(
    "dc",
    aliases=("dsa", "dm"),
    description="a DC/DSA/DM result file {'data': [[images, labels], ...]}; last experiment",
)
def _load_dc(path: Path, reading: _Reading) -> _Parts:
    return _dc_parts(_read_file(path, reading, TORCH_FILE, _torch_file(path, "dc")), path)


@FORMATS.register(
    "datm", aliases=("mtt",), description="a DATM/MTT folder: images_best.pt, labels_best.pt, lr_best.pt"
)
def _load_datm(path: Path, reading: _Reading) -> _Parts:
    if not (path / DATM_IMAGES).is_file():
        raise InputError(
            f"{shown(path)} has no {DATM_IMAGES}; a DATM/MTT folder holds {DATM_IMAGES} "
            f"and optionally {DATM_LABELS} and {DATM_LR}"
        )

    def optional(name: str) -> Any:
        return _read_file(path / name, reading, TORCH_FILE) if (path / name).exists() else None

    images = _read_file(path / DATM_IMAGES, reading, TORCH_FILE)
    return _Parts(images, optional(DATM_LABELS), optional(DATM_LR))


@FORMATS.register("npz", description="a .npz archive with 'images' (NHWC or NCHW) and optional 'labels'")
def _load_npz(path: Path, reading: _Reading, info: FileInfo | None = None) -> _Parts:
    info = info or classify(path)
    if info.kind is not FileKind.NPZ and info.kind in (*TORCH_KINDS, FileKind.NPY, FileKind.PICKLE):
        raise InputError(
            f"{info.shown} is {info.kind.description}, not a numpy .npz archive; leave the format to "
            "detection or name the right one"
        )
    arrays = _read_file(path, reading, "a numpy .npz archive", info)
    if "images" not in arrays:
        raise InputError(
            f"{shown(path)} has no 'images' array (arrays: {', '.join(map(shown, arrays)) or 'none'})"
        )
    return _Parts(arrays["images"], arrays.get("labels"), arrays.get("lr"))


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
            raise InputError(
                f"class folders {shown(owner[index])!r} and {shown(name)!r} both end in class number {index}"
            )
        indices[name], owner[index] = index, name
    return indices


def _no_layout(path: Path) -> InputError:
    return InputError(
        f"{shown(path)} matches no known synthetic-set layout: looked for {DATM_IMAGES} (DATM/MTT folder) "
        f"and for class folders holding image files ({', '.join(IMAGE_SUFFIXES)}) (SRe2L/RDED tree)"
    )


@contextlib.contextmanager
def _opened_image(file: Path) -> Iterator[Image.Image]:
    """An image opened lazily (header only), with PIL's decode errors and bomb checks as InputError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                yield image
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(
            f"image {shown(file)} is larger than PIL decodes safely ({one_line(e)}); resize it first"
        ) from e
    except (UnidentifiedImageError, *IMAGE_DECODE_ERRORS) as e:
        raise InputError(f"cannot read image {shown(file)}: {type(e).__name__}: {one_line(e)}") from e


@FORMATS.register(
    "imagefolder",
    aliases=("sre2l", "rded"),
    description="class folders of image files (SRe2L new000/, RDED 00000/)",
)
def _load_imagefolder(path: Path, reading: _Reading) -> _Parts:
    folders = _class_folders(path)
    indices = _class_indices([folder.name for folder in folders])
    files = [(indices[folder.name], file) for folder in folders for file in _image_files(folder)]
    if not files:
        raise _no_layout(path)
    first: tuple[Path, tuple[int, int]] | None = None
    grayscale = True
    for _, file in files:  # headers only: sizes are checked before any image is decoded
        with _opened_image(file) as image:
            size, mode, bands = image.size, image.mode, len(image.getbands())
        check_image_size(file, size[0], size[1], max(bands, 3), reading.max_bytes)
        if first is None:
            first = (file, size)
        elif size != first[1]:
            raise InputError(
                f"{shown(file)} is {size[0]}x{size[1]} but {shown(first[0])} is {first[1][0]}x{first[1][1]}; "
                "all images of a class-folder set must share one size"
            )
        grayscale = grayscale and mode in GRAYSCALE_MODES
    mode = "L" if grayscale else "RGB"
    arrays = []
    for _, file in files:
        with _opened_image(file) as image:
            arrays.append(np.asarray(_eight_bit(image).convert(mode), dtype=np.uint8))
    stack = np.stack(arrays)
    stack = stack[:, None] if grayscale else stack.transpose(0, 3, 1, 2)
    labels = torch.tensor([index for index, _ in files], dtype=torch.int64)
    return _Parts(torch.from_numpy(np.ascontiguousarray(stack)), labels)


def _eight_bit(image: Any) -> Any:
    """A 16-bit grey image rescaled to 8 bits (``v / 257``, rounded): Pillow's own conversion clips
    every value above 255 to white. Other images are returned as they are."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")


def _detect_directory(path: Path) -> str:
    if (path / DATM_IMAGES).is_file():
        return "datm"
    if any(_image_files(folder) for folder in _class_folders(path)):
        return "imagefolder"
    raise _no_layout(path)


def _detect_file(path: Path, reading: _Reading) -> tuple[str, _Parts]:
    """Read a file whose format is not named: its content (not its suffix) decides."""
    info = classify(path)
    if info.kind is FileKind.NPZ:
        return "npz", _load_npz(path, reading, info)
    if info.kind is FileKind.NPY:
        return "tensor", _Parts(_read_file(path, reading, "a numpy file", info))
    if info.kind in (*TORCH_KINDS, FileKind.PICKLE):
        obj = _read_file(path, reading, TORCH_FILE, info)
        return ("dc", _dc_parts(obj, path)) if _looks_like_dc(obj) else ("pt", _pt_parts(obj, path))
    expected = EXPECTED_BY_SUFFIX.get(path.suffix.lower())
    if expected or info.kind in (FileKind.EMPTY, FileKind.TRUNCATED):
        raise _unreadable(info, expected or "a synthetic-set file")
    raise InputError(
        f"cannot tell the format of {info.shown} from its suffix or its content ({info.kind.description}); "
        f"name it with format= (one of {', '.join(FORMATS.names())})"
    )


def _read_path(path: Path, format: str | None, reading: _Reading) -> tuple[str, _Parts]:
    """Detect (unless given) the format of a file or folder and read it."""
    if not path.exists():
        raise InputError(f"synthetic set {shown(path)} does not exist")
    if path.is_dir():
        format = format or _detect_directory(path)
        if format not in DIRECTORY_FORMATS:
            raise InputError(f"format {format!r} reads a file, but {shown(path)} is a directory")
    elif format is None:
        return _detect_file(path, reading)
    elif format in DIRECTORY_FORMATS:
        raise InputError(f"format {format!r} reads a folder, but {shown(path)} is a file")
    return format, FORMATS.get(format)(path, reading)


def _read_labels(labels: Any, reading: _Reading) -> Any:
    """Labels given separately: a tensor/array as is, or read from a torch or numpy file."""
    if not isinstance(labels, str | os.PathLike):
        return labels
    path = Path(labels)
    if path.is_dir():
        raise InputError(f"labels file {shown(path)} is a folder, not a file")
    if not path.is_file():
        raise InputError(f"labels file {shown(path)} does not exist")
    value = _read_file(path, reading, "a torch or numpy labels file")
    if isinstance(value, dict):
        key = next((k for k in ("labels", "y") if k in value), None)
        if key is None:
            raise InputError(
                f"labels file {shown(path)} holds a dict with keys {_keys(value)}; expected 'labels'"
            )
        value = value[key]
    return value


def load_synthetic(
    source: str | os.PathLike | torch.Tensor | np.ndarray | SyntheticSet,
    labels: str | os.PathLike | torch.Tensor | np.ndarray | None = None,
    *,
    format: str = "auto",
    lr: float | None = None,
    space: Space | None = None,
    allow_pickle: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> SyntheticSet:
    """Read a synthetic set from memory, a file or a folder; given labels, lr and space override stored ones.

    Integer images are raw pixels and become float32 in [0, 1] with space "pixel". Every file is
    classified and refused before loading when it needs full unpickling (unless ``allow_pickle``),
    is damaged, or declares more than ``max_bytes`` (arrays, inflated archives, decoded images).
    """
    forced = None if format == "auto" else FORMATS.canonical(format)
    _check_space(space)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise InputError(f"max_bytes must be a positive number of bytes; got {max_bytes!r}")
    reading = _Reading(allow_pickle=allow_pickle, max_bytes=max_bytes)
    notes: tuple[ValueWarning, ...] = ()
    if isinstance(source, SyntheticSet):
        if forced not in (None, source.format):
            raise InputError(f"format={format!r} was given for a set already loaded as {source.format!r}")
        parts, name, fmt = _Parts(source.images, source.labels, source.lr), source.source, source.format
        space = space if space is not None else source.space
        notes = source.warnings
    elif isinstance(source, torch.Tensor | np.ndarray):
        if forced not in (None, "tensor"):
            raise InputError(
                f"format={format!r} reads a path; an in-memory tensor or array is format 'tensor'"
            )
        parts, name, fmt = _Parts(source), MEMORY, "tensor"
    elif isinstance(source, str | os.PathLike):
        try:
            fmt, parts = _read_path(Path(source), forced, reading)
        except OSError as e:
            raise InputError(f"cannot read synthetic set {shown(source)}: {e.strerror or one_line(e)}") from e
        name = os.fspath(source) if isinstance(source, os.PathLike) else source
    else:
        raise InputError(
            f"cannot load a synthetic set from a {type(source).__name__}; "
            "expected a path, a tensor, a numpy array or a SyntheticSet"
        )
    where = shown(name)
    images, from_pixels, found = _as_images(parts.images, where)
    if from_pixels:
        if space not in (None, "pixel"):
            raise InputError(
                f"synthetic set {where}: integer images are raw pixels, but --space {space} was given "
                "(space= in Python); drop it or give --space pixel"
            )
        space = "pixel"
    try:
        given = _read_labels(labels, reading) if labels is not None else parts.labels
    except OSError as e:
        raise InputError(f"cannot read labels {shown(labels)}: {e.strerror or one_line(e)}") from e
    labels_source = os.fspath(labels) if isinstance(labels, str | os.PathLike) else None
    label_where = f"synthetic set {where}"
    if labels_source is not None:
        label_where = f"labels {shown(labels_source)} of {label_where}"
    replaced = ()
    if labels is not None and parts.labels is not None:
        given_name = shown(labels) if isinstance(labels, str | os.PathLike) else "given separately"
        replaced = (f"the labels of {given_name} replace the labels stored in synthetic set {where}",)
    return SyntheticSet(
        images=images,
        labels=_as_labels(given, label_where),
        lr=_as_lr(lr if lr is not None else parts.lr, where),
        space=space,
        source=str(name),
        format=fmt,
        warnings=notes or found,
        labels_source=labels_source,
        notes=replaced,
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


def check_values(images: torch.Tensor, space: Space, source: str = MEMORY) -> list[ValueWarning]:
    """Warnings for float image values that contradict ``space`` (finite images, as validated).

    0..255 floats declared as [0, 1] pixels or normalised images, non-negative "normalised" images,
    strongly negative "pixels", and magnitudes no image space reaches.
    """
    _check_space(space)
    if images.numel() == 0:
        return []
    where = f"synthetic set {shown(source)}"
    low, high = float(images.amin()), float(images.amax())
    span = f"values span {low:.4g}..{high:.4g}"
    if max(abs(low), abs(high)) >= ABSURD_MAGNITUDE:
        return [
            ValueWarning(
                f"{where}: {span}, far outside any image space ({space!r}); students trained on them "
                "diverge: check how the set was saved and rescale it"
            )
        ]
    if space in ("pixel", "normalized") and low >= PIXEL_FLOOR and LOOKS_255 < high <= PIXEL_255_CEILING:
        return [
            ValueWarning(
                f"{where}: {span}, which look like 0..255 pixels stored as floats, but space {space!r} "
                "expects [0, 1] pixels or normalised values; divide them by 255 and pass --space pixel, "
                "or save them as uint8",
                "--space pixel",
            )
        ]
    if space == "pixel" and low < PIXEL_FLOOR:
        return [
            ValueWarning(
                f"{where}: {span}, but space 'pixel' means [0, 1]; negative values like these are "
                "normalised images: pass --space normalized",
                "--space normalized",
            )
        ]
    if space == "normalized" and low >= 0.0 and high <= 1.0 and images.numel() >= MIN_VALUES_FOR_SIGN_CHECK:
        return [
            ValueWarning(
                f"{where}: {span} with none negative, which are [0, 1] pixels rather than normalised "
                "images (those are centred on the dataset mean); pass --space pixel",
                "--space pixel",
            )
        ]
    return []


def protocol_warnings(validated: ValidatedSet, *, label_mode: str, protocol: str) -> list[ValueWarning]:
    """Warnings for a set whose labels the protocol will not use: soft labels under a hard-label protocol."""
    if validated.soft_labels is None or label_mode != "hard":
        return []
    width = validated.soft_labels.shape[1]
    return [
        ValueWarning(
            f"synthetic set {shown(validated.source)}: its soft labels [N, {width}] are ignored because "
            f"protocol {shown(protocol)!r} trains on hard labels; use a soft-label protocol (labels mode S, "
            "e.g. --protocol datm) to train on them",
            "--protocol",
        )
    ]


def refuse_warnings(warnings_found: list[ValueWarning] | tuple[ValueWarning, ...], strict: bool) -> None:
    """Under ``strict`` (command line --strict) the first warning is an InputError."""
    if strict and warnings_found:
        raise InputError(f"{warnings_found[0].message} (refused by --strict, strict=True in Python)")


def validate_synthetic(
    syn: SyntheticSet,
    *,
    num_classes: int,
    channels: int,
    size: int,
    ipc: int | None = None,
    resize: bool = False,
    default_space: Space | None = None,
    strict: bool = False,
) -> ValidatedSet:
    """Check a synthetic set against the dataset (classes, channels) and the protocol (image size, IPC).

    Raises InputError with a message saying what is wrong and what to do; resizes only when ``resize``.
    Values that contradict the set's space (or ``default_space``, the protocol's, when the set names
    none) become ``warnings`` of the result, or an InputError under ``strict``.
    """
    where = f"synthetic set {shown(syn.source)}"
    if ipc is not None and (isinstance(ipc, bool) or not isinstance(ipc, int) or ipc <= 0):
        raise InputError(f"{where}: ipc must be a positive integer; got {ipc!r}")
    images, _, _ = _as_images(syn.images, shown(syn.source))
    n, c, h, w = images.shape
    if n == 0:
        raise InputError(f"{where} is empty: it holds 0 images")
    if c != channels:
        hint = ""
        if syn.format == "imagefolder" and (c, channels) == (3, 1):
            hint = "; a class-folder set is read in colour when any of its images is: make them all grey"
        raise InputError(
            f"{where}: images have {c} channels (shape {list(images.shape)}) but the dataset has "
            f"{channels}{hint}"
        )
    if h == 0 or w == 0:
        raise InputError(f"{where}: images are {h}x{w}; expected {size}x{size}")
    if not bool(torch.isfinite(images).all()):
        nan, inf = int(torch.isnan(images).sum()), int(torch.isinf(images).sum())
        raise InputError(f"{where}: images hold {nan} NaN and {inf} Inf values")
    space = syn.space if syn.space is not None else default_space
    found = list(syn.warnings) + (check_values(images, space, syn.source) if space is not None else [])
    refuse_warnings(found, strict)
    if (h, w) != (size, size):
        if not resize:
            raise InputError(
                f"{where}: images are {h}x{w} but the protocol uses {size}x{size}; "
                "pass --resize (resize=True in Python) to resize them"
            )
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    lr = _as_lr(syn.lr, shown(syn.source))
    labels = _as_labels(syn.labels, syn.label_where())
    soft = None
    if labels is None:
        hard = _implied_labels(n, num_classes, ipc, where)
    elif labels.dtype == torch.int64:
        _check_hard_labels(labels, n, num_classes, syn.label_where())
        hard = labels
    else:
        _check_soft_labels(labels, n, num_classes, syn.label_where())
        # Soft-label sets (DATM, SRe2L, ...) are stored class-major; their learned logits need not
        # peak at the image's class, so the class comes from the order when it can (as DD-Ranking
        # does) and from the argmax only for sets that are not a whole number of images per class.
        soft = labels
        hard = _implied_labels(n, num_classes, ipc, where) if n % num_classes == 0 else labels.argmax(dim=1)
    counts = torch.bincount(hard, minlength=num_classes).tolist()
    empty = [k for k, count in enumerate(counts) if count == 0]
    if empty:
        listed = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        which = f"class {listed} has" if len(empty) == 1 else f"classes {listed} have"
        raise InputError(f"{where}: {which} no image ({len(empty)} of {num_classes} classes are empty)")
    if ipc is not None and max(counts) != ipc:
        held = f"{min(counts)}..{max(counts)}" if min(counts) != max(counts) else str(max(counts))
        raise InputError(f"{where}: ipc={ipc} was given but the labels hold {held} images per class")
    if min(counts) != max(counts):
        fewest = counts.index(min(counts))
        found.append(
            ValueWarning(
                f"{where}: its classes hold {min(counts)}..{max(counts)} images (class {fewest}: "
                f"{min(counts)}; {n} in all, not {max(counts)} of each): its random subsets draw as many of "
                f"each class, and it is listed as IPC {max(counts)}"
            )
        )
        refuse_warnings(found[-1:], strict)
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
        # The resolved labels, not the given ones: labels=None and the same class-major labels given
        # explicitly are one set (one fingerprint, the same cached jobs).
        fingerprint=replace(syn, labels=soft if soft is not None else hard.to(torch.int64)).fingerprint(),
        warnings=tuple(found),
    )

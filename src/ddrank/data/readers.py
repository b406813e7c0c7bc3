"""Readers for the file formats real datasets ship in: CIFAR pickles, IDX, MATLAB ``.mat``, images.

Every reader checks a file's declared sizes against its length and against a limit before it
allocates anything, and nothing is unpickled beyond plain containers and numpy arrays. A bad
file raises :class:`DataError` with one line that names it.
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from ddrank.errors import DataError, positive_int_env

try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_ARRAY_BYTES",
    "MAX_IMAGE_PIXELS",
    "array_byte_limit",
    "check_labels",
    "decode_image",
    "image_pixel_limit",
    "pickle_field",
    "read_cifar_batch",
    "read_idx",
    "read_svhn_mat",
    "unpickle_arrays",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

MAX_ARRAY_BYTES = 1 << 32
"""Largest array an IDX or ``.mat`` file may declare (4 GiB; MNIST's train images are 47 MB)."""
ARRAY_BYTES_ENV = "DDRANK_MAX_DATASET_BYTES"

MAX_IMAGE_PIXELS = 1 << 26
"""Largest image (width x height) an image-folder dataset may hold: 8192 x 8192, under PIL's own warning."""
IMAGE_PIXELS_ENV = "DDRANK_MAX_IMAGE_PIXELS"


def array_byte_limit() -> int:
    """The byte limit for one array of an IDX or ``.mat`` file (``$DDRANK_MAX_DATASET_BYTES`` overrides)."""
    return positive_int_env(ARRAY_BYTES_ENV, MAX_ARRAY_BYTES, DataError)


def image_pixel_limit() -> int:
    """The pixel limit for one image of an image-folder dataset (``$DDRANK_MAX_IMAGE_PIXELS`` overrides)."""
    return positive_int_env(IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS, DataError)


def _over_limit(path: Path, what: str, nbytes: int) -> DataError:
    limit = array_byte_limit()
    return DataError(
        f"{path} declares {what} of {nbytes:,} bytes, over the {limit:,}-byte limit; "
        f"if the file is genuine, raise ${ARRAY_BYTES_ENV}"
    )


# --- CIFAR python pickles -----------------------------------------------------------------------

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


def unpickle_arrays(path: Path) -> dict[str, Any]:
    """A CIFAR python pickle as a dict with str keys, unpickling nothing but containers and arrays."""
    try:
        with path.open("rb") as file:
            content = _ArrayUnpickler(file, encoding="bytes").load()
    except _UNPICKLING_ERRORS as exc:
        raise DataError(f"cannot read {path} as a CIFAR python pickle: {exc}") from exc
    if not isinstance(content, dict):
        raise DataError(f"{path} holds a {type(content).__name__}, expected a CIFAR dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def pickle_field(path: Path, content: dict[str, Any], key: str) -> Any:
    """``content[key]``, or a DataError naming the file and the keys it has."""
    if key not in content:
        raise DataError(f"{path} has no {key!r} entry (found {sorted(content)}); is it a CIFAR python file?")
    return content[key]


def read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 3, 32, 32]`` and int64 labels of one CIFAR batch file."""
    content = unpickle_arrays(path)
    data = np.asarray(pickle_field(path, content, "data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: 'data' should be uint8 [N, 3072] (32x32 RGB planes), "
            f"got {data.dtype} {list(data.shape)}"
        )
    labels = np.asarray(pickle_field(path, content, label_key), dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
    check_labels(path, labels, num_classes)
    return data.reshape(-1, 3, 32, 32), labels


def check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """Labels must lie in ``[0, num_classes)``."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )


# --- IDX (MNIST family) ---------------------------------------------------------------------------

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error)


def read_idx(path: Path, dims: tuple[int | None, ...], dtype: str = "u1") -> np.ndarray:
    """The array of an IDX file (``.gz`` or plain) whose shape must match ``dims`` (None: any length).

    The header's dimensions are checked against ``dims``, the byte limit and, for a plain file, the
    file's length, all before the data is read; a gzip'd file must end exactly where its data does.
    """
    compressed = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if compressed else path.open("rb") as file:
            return _read_idx_stream(path, file, dims, dtype, compressed)
    except DataError:
        raise
    except _DECOMPRESSION_ERRORS as exc:
        what = "a valid gzip'd IDX file" if compressed else "readable"
        raise DataError(f"{path} is truncated or not {what} ({exc}); download it again") from exc


def _read_exact(path: Path, file: BinaryIO, count: int, what: str) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise DataError(f"{path} is truncated: it ends inside its {what} ({len(data)} of {count} bytes)")
    return data


def _read_idx_stream(
    path: Path, file: BinaryIO, dims: tuple[int | None, ...], dtype: str, compressed: bool
) -> np.ndarray:
    magic = _read_exact(path, file, 4, "header")
    if magic[:2] != b"\0\0" or magic[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (magic bytes {magic.hex()}); expected 0000<type><ndim>")
    found_type, ndim = _IDX_TYPES[magic[2]], magic[3]
    if found_type != dtype or ndim != len(dims):
        raise DataError(
            f"{path} holds a {ndim}-d {np.dtype(found_type)} IDX array, "
            f"expected {len(dims)}-d {np.dtype(dtype)}"
        )
    shape = struct.unpack(f">{ndim}I", _read_exact(path, file, 4 * ndim, "header"))
    expected = tuple(found if want is None else want for found, want in zip(shape, dims, strict=True))
    if shape != expected:
        raise DataError(f"{path} holds an array of shape {list(shape)}, expected {list(expected)}")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > array_byte_limit():
        raise _over_limit(path, f"an IDX array {list(shape)}", nbytes)
    if not compressed:
        available = path.stat().st_size - 4 - 4 * ndim
        if available != nbytes:
            state = "truncated" if available < nbytes else "longer than its header says"
            raise DataError(
                f"{path} is {state}: its header declares {nbytes:,} data bytes, the file holds {available:,}"
            )
    data = _read_exact(path, file, nbytes, "data")
    if compressed and file.read(1):
        raise DataError(f"{path} is longer than its header says: data continue after {nbytes:,} bytes")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.dtype(dtype).newbyteorder("="))


# --- MATLAB .mat (SVHN) -------------------------------------------------------------------------


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 3, 32, 32]`` and int64 labels in [0, 10) from an SVHN ``*_32x32.mat`` file.

    The file holds ``X`` (32, 32, 3, N) and ``y`` (N, 1) with digits 1..10, where 10 stands for 0
    (as torchvision's SVHN maps it). Variable shapes are read from the headers first (``whosmat``)
    and checked against the byte limit before any data is loaded; nothing is unpickled.
    """
    from scipy.io import loadmat, whosmat

    size = path.stat().st_size
    if size > array_byte_limit():
        raise _over_limit(path, "a file", size)
    try:
        variables = {name: (tuple(shape), kind) for name, shape, kind in whosmat(str(path))}
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, NotImplementedError (v7.3)
        raise DataError(f"cannot read {path} as a MATLAB .mat file: {exc}") from exc
    for name in ("X", "y"):
        if name not in variables:
            raise DataError(
                f"{path} has no variable {name!r} (found {sorted(variables)}): truncated, or not an SVHN file"
            )
    (x_shape, x_kind), (y_shape, _) = variables["X"], variables["y"]
    if len(x_shape) != 4 or x_shape[:3] != (32, 32, 3) or x_kind != "uint8":
        raise DataError(f"{path}: 'X' should be uint8 (32, 32, 3, N), found {x_kind} {x_shape}")
    count = x_shape[3]
    if math.prod(x_shape) > array_byte_limit():
        raise _over_limit(path, f"'X' {x_shape}", math.prod(x_shape))
    if math.prod(y_shape) != count or max(y_shape) != count:
        raise DataError(f"{path}: 'y' should hold one label per image ({count}), found shape {y_shape}")
    try:
        content = loadmat(str(path), variable_names=["X", "y"])
    except Exception as exc:  # a truncated or corrupt body: ValueError, OSError, MatReadError, zlib.error
        raise DataError(f"{path} is truncated or corrupt ({exc}); download it again") from exc
    images, raw = content["X"], np.asarray(content["y"]).reshape(-1)
    if images.dtype != np.uint8 or images.shape != x_shape or raw.shape != (count,):
        raise DataError(f"{path}: the data do not match their headers; download it again")
    if count and (not np.issubdtype(raw.dtype, np.number) or raw.min() < 0 or raw.max() > 10):
        raise DataError(f"{path}: 'y' should hold digits 1..10 (10 for 0), got [{raw.min()}, {raw.max()}]")
    labels = raw.astype(np.int64) % 10
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels


# --- images -------------------------------------------------------------------------------------


def decode_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8 ``[3, size, size]``: shorter side resized to ``size`` (bilinear), then centre-cropped.

    Matches torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on PIL images. The image's
    dimensions are read from its header (PIL opens lazily) and checked against the pixel limit
    before anything is decoded.
    """
    limit = image_pixel_limit()
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height <= limit:
                image = opened.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"image {path} is over PIL's decompression-bomb limit ({exc}); "
            f"ddrank refuses images over {limit:,} pixels"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from exc
    if width * height > limit:
        raise DataError(
            f"image {path} is {width}x{height} ({width * height:,} pixels), over the {limit:,}-pixel limit; "
            f"if it is genuine, raise ${IMAGE_PIXELS_ENV}"
        )
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

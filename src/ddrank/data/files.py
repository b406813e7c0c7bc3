"""What an untrusted file is, decided from its magic bytes and headers before anything loads it.

:func:`classify` tells a torch zip archive from a legacy torch pickle, a plain pickle, a numpy
``.npy`` array or ``.npz`` archive, text, an empty, truncated or unknown file, and records the
number of bytes the file's own headers declare (array shapes × dtype, zip members' uncompressed
sizes). Nothing is unpickled: pickles are only scanned opcode by opcode (:mod:`pickletools`).
:func:`check_declared_size` refuses a file whose declared content exceeds a limit before
anything is allocated.
"""

from __future__ import annotations

import ast
import enum
import math
import os
import pickletools
import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ddrank.errors import InputError, one_line, shown

DEFAULT_MAX_BYTES = 1 << 30
"""Default limit on the bytes a file may declare (decoded arrays, inflated zip members, image pixels)."""

MAX_BYTES_HINT = "--max-input-size (max_bytes= in Python)"
SNIFF_BYTES = 8192
NPY_HEADER_BYTES = 65536 + 16
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"
# torch.save's legacy (pre-1.6) format starts with a protocol-2 pickle of this magic number.
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
# The legacy format pickles the magic number, protocol version, system info, object and storage keys.
TORCH_LEGACY_PICKLES = 5
GLOBAL_OPCODES = frozenset({"GLOBAL", "INST"})
STRING_OPCODES = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
)
# Element sizes of the storage types a legacy torch file names (torch.<Type>Storage globals).
LEGACY_STORAGE_BYTES = {
    f"torch.{name}Storage": width
    for name, width in {
        "Double": 8,
        "Float": 4,
        "Half": 2,
        "BFloat16": 2,
        "Long": 8,
        "Int": 4,
        "Short": 2,
        "Char": 1,
        "Byte": 1,
        "Bool": 1,
        "ComplexFloat": 8,
        "ComplexDouble": 16,
    }.items()
}
# What Python's zipfile raises on a damaged or unsupported archive (unknown versions or compression).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    ValueError,
    EOFError,
    OSError,
    NotImplementedError,
    struct.error,
    OverflowError,
)
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)


class FileKind(enum.StrEnum):
    """What a file holds, as far as its bytes tell before loading."""

    TORCH_ZIP = "torch-zip"
    TORCH_LEGACY = "torch-legacy"
    PICKLE = "pickle"
    NPY = "npy"
    NPZ = "npz"
    ZIP = "zip"
    TEXT = "text"
    EMPTY = "empty"
    TRUNCATED = "truncated"
    UNKNOWN = "unknown"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    FileKind.TORCH_ZIP: "a torch.save zip archive",
    FileKind.TORCH_LEGACY: "a legacy (pre-1.6) torch.save pickle",
    FileKind.PICKLE: "a plain Python pickle, not written by torch.save",
    FileKind.NPY: "a numpy .npy array",
    FileKind.NPZ: "a numpy .npz archive",
    FileKind.ZIP: "a zip archive that is neither a torch.save file nor a numpy .npz",
    FileKind.TEXT: "text",
    FileKind.EMPTY: "empty (0 bytes)",
    FileKind.TRUNCATED: "truncated",
    FileKind.UNKNOWN: "binary data of no known format",
}


@dataclass(frozen=True)
class FileInfo:
    """The classification of one file: its kind, size on disk, declared content and findings.

    ``declared_bytes`` is what loading would allocate according to the file's headers (None when
    they do not say); ``largest`` names the part that declares the most; ``detail`` says why a file
    is truncated or what an array's header declares; ``globals`` are the ``module.name`` references
    a pickle makes (what full unpickling would import and may call).
    """

    path: Path
    kind: FileKind
    size: int
    declared_bytes: int | None = None
    largest: str = ""
    detail: str = ""
    globals: tuple[str, ...] = ()
    members: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        return shown(self.path)


def human_bytes(n: int | float) -> str:
    """``1536`` → ``'1.5 KiB'``: a byte count for messages."""
    value, unit = float(n), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def parse_size(text: str | int) -> int:
    """A size such as ``"8G"``, ``"512MiB"`` or ``"1000000"`` in bytes (K, M, G, T, P are powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise InputError(f"size {str(text)!r} is not a number of bytes such as 1000000, 512M or 8G")
        scale = 1024 ** ("kmgtp".index(match.group(2).lower()) + 1) if match.group(2) else 1
        value = int(float(match.group(1)) * scale)
    if value < 1:
        raise InputError(f"size {text!r} must be at least 1 byte")
    return value


def classify(path: str | os.PathLike) -> FileInfo:
    """What ``path`` holds, from its magic bytes and headers; never unpickles or decodes data.

    Raises InputError only when the file cannot be read at all (missing, a folder, no permission).
    """
    path = Path(path)
    try:
        status = path.stat()
        if stat.S_ISDIR(status.st_mode):
            raise InputError(f"{shown(path)} is a folder, not a file")
        if not stat.S_ISREG(status.st_mode):
            raise InputError(f"{shown(path)} is not a regular file (a pipe, socket or device); give a file")
        size = status.st_size
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
            if not head:
                return FileInfo(path, FileKind.EMPTY, size)
            if head.startswith(ZIP_MAGIC):
                return _classify_zip(path, handle, size)
            if head.startswith(NPY_MAGIC):
                handle.seek(0)
                return _classify_npy(path, handle, size)
            if head.startswith(TORCH_LEGACY_MAGIC):
                handle.seek(0)
                return _classify_pickles(path, handle, size, FileKind.TORCH_LEGACY, TORCH_LEGACY_PICKLES)
            if _could_be_pickle(head):
                handle.seek(0)
                info = _classify_pickles(path, handle, size, FileKind.PICKLE, 1)
                if info.kind is FileKind.PICKLE or head[:1] == b"\x80":
                    return info
            return FileInfo(path, FileKind.TEXT if _looks_like_text(head) else FileKind.UNKNOWN, size)
    except OSError as exc:
        raise InputError(f"cannot read {shown(path)}: {exc.strerror or exc}") from exc


def check_declared_size(info: FileInfo, max_bytes: int) -> None:
    """Refuse a file whose headers declare more than ``max_bytes`` (or whose size on disk exceeds it)."""
    declared = max(info.declared_bytes or 0, info.size)
    if declared <= max_bytes:
        return
    what = f" ({info.largest})" if info.largest else ""
    raise InputError(
        f"{info.shown} declares {human_bytes(declared)} of data{what}, more than the limit of "
        f"{human_bytes(max_bytes)}; pass a larger {MAX_BYTES_HINT} only if you trust the file"
    )


def check_image_size(path: Path, width: int, height: int, channels: int, max_bytes: int) -> None:
    """Refuse an image whose header declares more decoded bytes than ``max_bytes``, before decoding it."""
    declared = width * height * channels
    if declared > max_bytes:
        raise InputError(
            f"image {shown(path)} is {width}x{height} ({human_bytes(declared)} decoded), more than the "
            f"limit of {human_bytes(max_bytes)}; pass a larger {MAX_BYTES_HINT} only if you trust it"
        )


# ---- zip archives (torch.save, .npz) --------------------------------------------------------------


def _classify_zip(path: Path, handle: IO[bytes], size: int) -> FileInfo:
    handle.seek(0)
    try:
        archive = zipfile.ZipFile(handle)
    except ZIP_ERRORS as exc:
        return FileInfo(
            path,
            FileKind.TRUNCATED,
            size,
            detail=f"its zip central directory is missing or damaged ({one_line(exc)})",
        )
    with archive:
        members = archive.infolist()
        names = tuple(m.filename for m in members)
        for member in members:
            if member.header_offset + member.compress_size > size:
                return FileInfo(
                    path,
                    FileKind.TRUNCATED,
                    size,
                    detail=f"its zip member {member.filename!r} ends past the end of the file",
                    members=names,
                )
        if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return _zip_info(path, FileKind.TORCH_ZIP, size, members)
        if all(name.endswith(".npy") for name in names):
            return _classify_npz(path, archive, size, members)
        return _zip_info(path, FileKind.ZIP, size, members)


def _zip_info(path: Path, kind: FileKind, size: int, members: list[zipfile.ZipInfo]) -> FileInfo:
    """A zip archive's declared content: the sum of its members' uncompressed sizes."""
    largest = max(members, key=lambda m: m.file_size, default=None)
    text = ""
    if largest is not None and largest.file_size > 0:
        text = (
            f"member {largest.filename!r} inflates from {human_bytes(largest.compress_size)} "
            f"to {human_bytes(largest.file_size)}"
        )
    names = tuple(m.filename for m in members)
    return FileInfo(path, kind, size, sum(m.file_size for m in members), text, members=names)


def _classify_npz(
    path: Path, archive: zipfile.ZipFile, size: int, members: list[zipfile.ZipInfo]
) -> FileInfo:
    """An .npz archive, truncated unless every member's .npy header fits the bytes the member holds."""
    for member in members:
        try:
            with archive.open(member) as stream:
                shape, dtype, header_bytes, error = _npy_header(stream)
        except (*ZIP_ERRORS, RuntimeError) as exc:  # RuntimeError: an encrypted member
            error = one_line(exc)
        if error:
            return FileInfo(path, FileKind.TRUNCATED, size, detail=f"its member {member.filename!r}: {error}")
        data = _array_bytes(shape, dtype)
        if data is not None and header_bytes + data > member.file_size:
            return FileInfo(
                path,
                FileKind.TRUNCATED,
                size,
                detail=(
                    f"its member {member.filename!r} declares an array {_shape_text(shape, dtype)} "
                    f"({human_bytes(data)}) but holds {human_bytes(member.file_size)}"
                ),
            )
    return _zip_info(path, FileKind.NPZ, size, members)


# ---- numpy .npy -----------------------------------------------------------------------------------


def _npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int, str]:
    """(shape, dtype, header length, error) of an .npy stream, reading only its header (any version)."""
    head = stream.read(NPY_HEADER_BYTES)
    if len(head) < 10:
        return (), np.dtype("u1"), 0, "it ends inside its .npy magic string"
    major = head[6]
    if major not in (1, 2, 3):
        return (), np.dtype("u1"), 0, f"its .npy format version {major}.{head[7]} is unknown"
    start = 10 if major == 1 else 12
    if len(head) < start:
        return (), np.dtype("u1"), 0, "it ends inside its .npy header"
    (length,) = struct.unpack("<H" if major == 1 else "<I", head[8:start])
    if start + length > NPY_HEADER_BYTES:
        return (), np.dtype("u1"), 0, f"its .npy header claims {length} bytes, more than a header holds"
    if len(head) < start + length:
        return (), np.dtype("u1"), 0, "it ends inside its .npy header"
    try:
        fields = ast.literal_eval(head[start : start + length].decode("utf-8" if major == 3 else "latin-1"))
        shape, dtype = fields["shape"], np.lib.format.descr_to_dtype(fields["descr"])
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"shape {shape!r} is not a tuple of non-negative integers")
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError) as exc:
        return (), np.dtype("u1"), 0, f"its .npy header is invalid ({one_line(exc)})"
    return shape, dtype, start + length, ""


def _array_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int | None:
    """Bytes an array of ``shape`` and ``dtype`` holds (None for object arrays, which are pickled)."""
    if dtype.hasobject:
        return None
    return math.prod(shape) * dtype.itemsize


def _shape_text(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{list(shape)} {dtype}"


def _classify_npy(path: Path, handle: IO[bytes], size: int) -> FileInfo:
    shape, dtype, header_bytes, error = _npy_header(handle)
    if error:
        return FileInfo(path, FileKind.TRUNCATED, size, detail=error)
    data = _array_bytes(shape, dtype)
    text = f"an array {_shape_text(shape, dtype)}"
    if data is None:
        return FileInfo(path, FileKind.NPY, size, None, detail=f"{text} of pickled Python objects")
    if header_bytes + data > size:
        return FileInfo(
            path,
            FileKind.TRUNCATED,
            size,
            detail=(
                f"its header declares {text} ({human_bytes(data)}) "
                f"but it holds {human_bytes(size - header_bytes)}"
            ),
        )
    return FileInfo(path, FileKind.NPY, size, data, text, detail=text)


# ---- pickles --------------------------------------------------------------------------------------


def _could_be_pickle(head: bytes) -> bool:
    """Protocol 2+ pickles start with PROTO; protocols 0 and 1 with one of a few opcodes."""
    if head[:1] == b"\x80":
        return len(head) < 2 or 2 <= head[1] <= 5
    return head[:1] in (b"(", b"}", b"]", b")", b"c", b"d", b"l", b"N", b"I", b"F", b"S", b"V", b"L", b"i")


def _classify_pickles(path: Path, handle: IO[bytes], size: int, kind: FileKind, count: int) -> FileInfo:
    """Scan ``count`` consecutive pickles opcode by opcode: truncated, or the globals they reference.

    A legacy torch file's raw storages follow its pickles; their records are walked when every
    storage shares one element size, so a cut-off or over-declared storage is caught too.
    """
    found: dict[str, None] = {}
    strings: list[str] = []
    for _ in range(count):
        try:
            names, strings = _scan_pickle(handle)
        except (ValueError, EOFError, struct.error, UnicodeDecodeError, OverflowError) as exc:
            if handle.tell() >= size:
                return FileInfo(
                    path, FileKind.TRUNCATED, size, detail="its pickle stream ends before its end mark"
                )
            return FileInfo(path, FileKind.UNKNOWN, size, detail=f"not a valid pickle ({one_line(exc)})")
        found.update(dict.fromkeys(names))
    names = tuple(found)
    if kind is not FileKind.TORCH_LEGACY:
        return FileInfo(path, kind, size, globals=names)
    return _legacy_storages(path, handle, size, names, len(strings))


def _legacy_storages(
    path: Path, handle: IO[bytes], size: int, names: tuple[str, ...], count: int
) -> FileInfo:
    """Walk a legacy torch file's storage records (8-byte element count, then the elements)."""
    widths = {LEGACY_STORAGE_BYTES[n] for n in names if n in LEGACY_STORAGE_BYTES}
    start = handle.tell()
    if len(widths) != 1:
        if size - start < 8 * count:
            return FileInfo(path, FileKind.TRUNCATED, size, detail="its storages end early", globals=names)
        return FileInfo(path, FileKind.TORCH_LEGACY, size, globals=names)
    (width,) = widths
    position, declared = start, 0
    for index in range(count):
        handle.seek(position)
        raw = handle.read(8)
        if len(raw) < 8:
            return FileInfo(
                path, FileKind.TRUNCATED, size, detail=f"it ends before storage {index + 1} of {count}"
            )
        (elements,) = struct.unpack("<q", raw)
        nbytes = max(elements, 0) * width
        declared += nbytes
        position += 8 + nbytes
        if position > size:
            return FileInfo(
                path,
                FileKind.TRUNCATED,
                size,
                detail=(
                    f"its storage {index + 1} of {count} declares {human_bytes(nbytes)} "
                    f"but the file ends {human_bytes(position - size)} early"
                ),
                globals=names,
            )
    return FileInfo(path, FileKind.TORCH_LEGACY, size, declared, globals=names)


def _scan_pickle(handle: IO[bytes]) -> tuple[list[str], list[str]]:
    """The ``module.name`` globals and the strings of one pickle, read from its opcodes, never executed."""
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    memoized = 0
    recent: list[str | None] = [None, None]  # the last two values pushed, if they were strings
    for opcode, arg, _ in pickletools.genops(handle):
        name = opcode.name
        pushed: str | None = None
        if name in GLOBAL_OPCODES:
            found.append(str(arg).replace(" ", ".", 1))
        elif name == "STACK_GLOBAL":
            module, attribute = recent
            found.append(f"{module}.{attribute}" if module and attribute else "<a global named at run time>")
        elif name in STRING_OPCODES:
            pushed = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
            strings.append(pushed)
        elif name == "MEMOIZE":
            memo[memoized], memoized = recent[-1], memoized + 1
            continue
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1]
            continue
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed = memo.get(int(arg))
        recent = [recent[-1], pushed]
    return found, strings


def torch_pickle_globals(info: FileInfo) -> tuple[str, ...]:
    """The globals a torch file's object pickle references (a zip archive's data.pkl), never executed."""
    if info.kind is FileKind.TORCH_LEGACY:
        return info.globals
    if info.kind is not FileKind.TORCH_ZIP:
        return ()
    try:
        with zipfile.ZipFile(info.path) as archive:
            name = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
            with archive.open(name) as stream:
                return tuple(dict.fromkeys(_scan_pickle(stream)[0]))
    except (*ZIP_ERRORS, RuntimeError, StopIteration):
        return ()


def _looks_like_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    if text.count("\ufffd") > 3:
        return False
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in text)
    return printable >= 0.95 * len(text)

"""Builders of hostile and damaged files, shared by the loader and fuzz tests."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from PIL import Image


class MakesDirectory:
    """A pickle payload with a visible side effect: unpickling it creates a directory."""

    def __init__(self, target: str | os.PathLike):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


SYNTHETIC_FORMATS = ("pt", "pt-legacy", "npy", "npz", "dc", "datm", "imagefolder")
"""The on-disk forms of a synthetic set that :func:`write_synthetic` writes."""


def write_synthetic(
    fmt: str,
    folder: Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    soft: torch.Tensor | None = None,
    experiments: int = 1,
) -> Path:
    """A valid synthetic set of ``images`` [N, C, H, W] and ``labels`` [N] in format ``fmt`` (one of
    :data:`SYNTHETIC_FORMATS`) under ``folder``; returns the file or folder to load. Formats without a
    labels field (npy, DATM without ``soft``) carry the images only; DC's result file holds
    ``experiments`` copies; an image folder holds 8-bit PNGs, grey for one channel."""
    folder = Path(folder)
    if fmt in ("pt", "pt-legacy"):
        payload = {"images": images, "labels": labels}
        if fmt == "pt":
            payload["lr"] = 0.01
        torch.save(payload, folder / "syn.pt", _use_new_zipfile_serialization=fmt == "pt")
        return folder / "syn.pt"
    if fmt == "npy":
        np.save(folder / "syn.npy", images.numpy())
        return folder / "syn.npy"
    if fmt == "npz":
        np.savez(folder / "syn.npz", images=images.numpy(), labels=labels.numpy())
        return folder / "syn.npz"
    if fmt == "dc":
        accuracies = [0.5 + 0.02 * i for i in range(experiments)]
        data = [[images, labels] for _ in range(experiments)]
        torch.save({"data": data, "accs_all_exps": {"ConvNet": accuracies}}, folder / "res_DC.pt")
        return folder / "res_DC.pt"
    if fmt == "datm":
        (folder / "datm").mkdir()
        torch.save(images, folder / "datm" / "images_best.pt")
        if soft is not None:
            torch.save(soft, folder / "datm" / "labels_best.pt")
        torch.save(torch.tensor(0.01), folder / "datm" / "lr_best.pt")
        return folder / "datm"
    if fmt == "imagefolder":
        low, high = images.min(), images.max()
        pixels = ((images - low) / (high - low).clamp_min(1e-12) * 255).round().to(torch.uint8)
        for i, (picture, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
            (folder / "syn" / f"class{label:03d}").mkdir(parents=True, exist_ok=True)
            array = picture.permute(1, 2, 0).numpy()
            Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(
                folder / "syn" / f"class{label:03d}" / f"{i}.png"
            )
        return folder / "syn"
    raise ValueError(f"unknown format {fmt}")


def npy_bytes(shape: tuple[int, ...], descr: str = "<f4", data: bytes = b"") -> bytes:
    """An .npy file (format 1.0) whose header declares ``shape`` and ``descr``, followed by ``data``."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def zip_bomb(path: Path, inflated_mib: int, name: str = "images.npy") -> None:
    """An .npz whose one valid member inflates about a thousandfold to ``inflated_mib`` MiB of float32 zeros.

    Built without compressing the zeros: after a full flush deflate restarts from a clean state, so
    every MiB of zeros compresses to the same bytes, which are repeated.
    """
    zeros = bytes(1 << 20)
    header = npy_bytes((inflated_mib * (1 << 20) // (4 * 3072), 3, 32, 32))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = head + block * inflated_mib + compressor.flush()
    crc = zlib.crc32(header)
    for _ in range(inflated_mib):
        crc = zlib.crc32(zeros, crc)
    size = len(header) + inflated_mib * len(zeros)
    encoded = name.encode()
    sizes = struct.pack("<III", crc, len(body), size)
    local = (
        b"PK\x03\x04" + struct.pack("<HHHHH", 20, 0, 8, 0, 0x21) + sizes + struct.pack("<HH", len(encoded), 0)
    )
    central = (
        b"PK\x01\x02"
        + struct.pack("<HHHHHH", 20, 20, 0, 8, 0, 0x21)
        + sizes
        + struct.pack("<HHHHHII", len(encoded), 0, 0, 0, 0, 0, 0)
        + encoded
    )
    offset = len(local) + len(encoded) + len(body)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), offset, 0)
    Path(path).write_bytes(local + encoded + body + central + end)


def png_header(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR declaring ``width`` x ``height`` RGB and an empty image stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def fuzz_settings(fast: int, slow: int, *checks: HealthCheck) -> tuple[settings, settings]:
    """Hypothesis settings for a fuzz module: ``fast`` derandomized examples in the default suite and
    ``slow`` random ones under ``-m slow``; no deadline, no example database, ``checks`` suppressed
    beside too_slow."""
    quiet = [HealthCheck.too_slow, *checks]
    common = {"deadline": None, "database": None, "suppress_health_check": quiet}
    return settings(max_examples=fast, derandomize=True, **common), settings(max_examples=slow, **common)

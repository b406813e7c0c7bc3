"""Fuzzing the synthetic-set loaders: every on-disk format, damaged in every way (cut short, emptied,
overwritten with random bytes, bytes flipped, garbage appended, over the size limit), and arrays of
every dtype and shape. Each case must load, or raise a DDRankError whose message is one line and names
the file, and no file may change. The default run tries a few derandomised examples per property;
the ``slow`` variants try many random ones."""

from __future__ import annotations

import math
import pickle
import tempfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from ddrank.data.synthetic import load_synthetic, validate_synthetic
from ddrank.errors import DDRankError
from malformed import SYNTHETIC_FORMATS, MakesDirectory, fuzz_settings, npy_bytes, write_synthetic, zip_bomb

FAST, SLOW = fuzz_settings(30, 400, HealthCheck.data_too_large)


def _images(n: int = 4) -> torch.Tensor:
    return torch.linspace(-1, 1, n * 3 * 4 * 4).reshape(n, 3, 4, 4)


def _labels(n: int = 4) -> torch.Tensor:
    return torch.arange(n) % 2


def _write(fmt: str, folder: Path) -> Path:
    return write_synthetic(fmt, folder, _images(), _labels(), soft=torch.randn(4, 2), experiments=2)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in _files(root)}


def _check(source: Path, root: Path, **options) -> None:
    """Loading ``source`` (and validating what loads) succeeds or raises a one-line DDRankError that
    names the file, and leaves every file under ``root`` unchanged."""
    before = _snapshot(root)
    try:
        syn = load_synthetic(source, **options)
        validate_synthetic(syn, num_classes=2, channels=3, size=4, resize=True)
    except DDRankError as error:
        message = str(error)
        assert "\n" not in message and "\r" not in message, message
        assert str(source) in message or str(root) in message, message
    assert _snapshot(root) == before


MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0, exclude_max=True)),
    st.tuples(st.just("random"), st.binary(min_size=0, max_size=600)),
    st.tuples(
        st.just("flip"),
        st.lists(
            st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8
        ),
    ),
    st.tuples(
        st.just("overwrite"),
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.binary(min_size=1, max_size=64)),
    ),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
)


def _mutate(path: Path, mutation: tuple) -> None:
    kind, arg = mutation
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        data = data[: int(arg * len(data))]
    elif kind == "random":
        data = bytearray(arg)
    elif kind == "flip":
        for where, value in arg:
            data[int(where * len(data))] = value
    elif kind == "overwrite":
        where, chunk = arg
        start = int(where * len(data))
        data[start : start + len(chunk)] = chunk
    else:
        data += arg
    path.write_bytes(bytes(data))


def _damaged_case(fmt: str, pick: float, mutation: tuple) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = _write(fmt, root)
        files = _files(root)
        _mutate(files[int(pick * len(files))], mutation)
        _check(source, root)


@FAST
@given(fmt=st.sampled_from(SYNTHETIC_FORMATS), pick=st.floats(0.0, 1.0, exclude_max=True), mutation=MUTATIONS)
def test_damaged_files_of_every_format(fmt, pick, mutation):
    _damaged_case(fmt, pick, mutation)


@pytest.mark.slow
@SLOW
@given(fmt=st.sampled_from(SYNTHETIC_FORMATS), pick=st.floats(0.0, 1.0, exclude_max=True), mutation=MUTATIONS)
def test_damaged_files_of_every_format_many(fmt, pick, mutation):
    _damaged_case(fmt, pick, mutation)


@pytest.mark.parametrize("fmt", SYNTHETIC_FORMATS)
def test_every_format_cut_to_every_length_class(fmt):
    """Zero length, one byte, half, and all but one byte: each refused (or loaded) cleanly."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = _write(fmt, root)
        target = _files(root)[0]
        length = len(target.read_bytes())
        original = target.read_bytes()
        for cut in sorted({0, 1, length // 2, length - 1}):
            target.write_bytes(original[:cut])
            _check(source, root)


@pytest.mark.parametrize("fmt", SYNTHETIC_FORMATS)
def test_every_format_over_the_size_limit_is_refused_naming_the_limit(fmt):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = _write(fmt, root)
        before = _snapshot(root)
        with pytest.raises(
            DDRankError, match=r"more than the limit of 40 B; pass a larger --max-input-size"
        ) as refused:
            load_synthetic(source, max_bytes=40)
        assert "\n" not in str(refused.value) and str(root) in str(refused.value)
        assert _snapshot(root) == before


def test_bombs_and_hostile_pickles_of_every_container():
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        marker = root / "ran"
        zip_bomb(root / "bomb.npz", 1100)
        (root / "huge.npy").write_bytes(npy_bytes((64_000_000, 1_000_000), data=b"\0" * 64))
        (root / "evil.pkl").write_bytes(pickle.dumps({"images": MakesDirectory(marker)}))
        torch.save({"images": _images(), "x": MakesDirectory(marker)}, root / "evil.pt")
        torch.save({"data": [[MakesDirectory(marker), _labels()]]}, root / "evil_dc.pt")
        (root / "evil_datm").mkdir()
        torch.save(_images(), root / "evil_datm" / "images_best.pt")
        torch.save(MakesDirectory(marker), root / "evil_datm" / "lr_best.pt")
        for name in ("bomb.npz", "huge.npy", "evil.pkl", "evil.pt", "evil_dc.pt", "evil_datm"):
            with pytest.raises(DDRankError) as refused:
                load_synthetic(root / name)
            assert "\n" not in str(refused.value) and str(root / name) in str(refused.value)
        assert not marker.exists()


DTYPES = st.sampled_from(
    [
        "?",
        "i1",
        "u1",
        "<i2",
        ">u2",
        "<i4",
        "<i8",
        "<u8",
        "<f2",
        ">f4",
        "<f8",
        "<c8",
        "<U3",
        "S4",
        "O",
        np.longdouble,
    ]
)
ARRAYS = DTYPES.flatmap(
    lambda dtype: hnp.arrays(
        np.dtype(dtype),
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4),
        elements=st.integers(-5, 5) if np.dtype(dtype).kind == "O" else None,
    )
)


def _array_case(images: np.ndarray, labels: np.ndarray, container: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if container == "npz":
            np.savez(root / "syn.npz", images=images, labels=labels)
            source = root / "syn.npz"
        elif container == "npy":
            np.save(root / "syn.npy", images)
            source = root / "syn.npy"
        else:
            numeric = images.dtype.kind in "biuf" and images.dtype.isnative and images.dtype.itemsize <= 8
            tensor = torch.from_numpy(images) if numeric else images
            try:
                torch.save({"images": tensor, "labels": labels}, root / "syn.pt")
            except (TypeError, RuntimeError, pickle.PicklingError):
                return
            source = root / "syn.pt"
        _check(source, root)
        _check(source, root, allow_pickle=True)


@FAST
@given(images=ARRAYS, labels=ARRAYS, container=st.sampled_from(["npz", "npy", "pt"]))
def test_arrays_of_every_dtype_and_shape(images, labels, container):
    _array_case(images, labels, container)


@pytest.mark.slow
@SLOW
@given(images=ARRAYS, labels=ARRAYS, container=st.sampled_from(["npz", "npy", "pt"]))
def test_arrays_of_every_dtype_and_shape_many(images, labels, container):
    _array_case(images, labels, container)


@FAST
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**70), 2**70),
        st.text(max_size=5),
        st.none(),
    ),
    key=st.sampled_from(["lr", "labels", "images"]),
)
def test_wrong_types_under_every_key(value, key):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        content = {"images": _images(), "labels": _labels(), "lr": 0.01, key: value}
        torch.save(content, root / "syn.pt")
        _check(root / "syn.pt", root)
        if key == "lr" and isinstance(value, float) and not math.isfinite(value):
            with pytest.raises(DDRankError, match="lr must be a positive finite number"):
                load_synthetic(root / "syn.pt")

"""File classification from magic bytes and headers: every kind, truncation, declared sizes, and
refusal of oversized archives before anything is allocated."""

import os
import pickle
import time
import zipfile

import numpy as np
import pytest
import torch

from ddrank.data.files import (
    FileKind,
    check_declared_size,
    check_image_size,
    classify,
    human_bytes,
    parse_size,
    torch_pickle_globals,
)
from ddrank.errors import InputError
from malformed import MakesDirectory, npy_bytes, png_header, zip_bomb


@pytest.fixture
def files(tmp_path):
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2)
    torch.save({"images": x}, tmp_path / "zip.pt")
    torch.save({"images": x}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    np.save(tmp_path / "a.npy", x.numpy())
    np.savez(tmp_path / "a.npz", images=x.numpy(), labels=np.array([0, 1]))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"images": [1.0, 2.0]}, protocol=4))
    (tmp_path / "text.pt").write_text("images: [1, 2, 3]\nlabels: [0, 1]\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    return tmp_path


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("zip.pt", FileKind.TORCH_ZIP),
        ("legacy.pt", FileKind.TORCH_LEGACY),
        ("a.npy", FileKind.NPY),
        ("a.npz", FileKind.NPZ),
        ("other.zip", FileKind.ZIP),
        ("plain.pkl", FileKind.PICKLE),
        ("text.pt", FileKind.TEXT),
        ("empty.pt", FileKind.EMPTY),
        ("random.pt", FileKind.UNKNOWN),
    ],
)
def test_every_kind_is_recognised_from_its_bytes(files, name, kind):
    assert classify(files / name).kind is kind


def test_declared_sizes_come_from_headers(files):
    assert classify(files / "a.npy").declared_bytes == 2 * 3 * 2 * 2 * 4
    assert classify(files / "a.npz").declared_bytes >= 2 * 3 * 2 * 2 * 4 + 2 * 8
    info = classify(files / "zip.pt")
    assert info.declared_bytes >= 2 * 3 * 2 * 2 * 4 and any(m.endswith("data.pkl") for m in info.members)


@pytest.mark.parametrize("name", ["zip.pt", "a.npy", "a.npz", "legacy.pt", "plain.pkl"])
def test_a_file_cut_short_is_truncated(files, name):
    data = (files / name).read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 12):
        (files / "cut").write_bytes(data[:cut])
        info = classify(files / "cut")
        assert info.kind is FileKind.TRUNCATED, (cut, info)
        assert info.detail


def test_an_npy_header_declaring_more_than_the_file_holds_is_truncated(tmp_path):
    (tmp_path / "huge.npy").write_bytes(npy_bytes((8_000_000, 8_000_000), data=b"\0" * 64))
    info = classify(tmp_path / "huge.npy")
    assert info.kind is FileKind.TRUNCATED
    assert "[8000000, 8000000] float32 (232.8 TiB) but it holds 64 B" in info.detail


def test_an_npz_member_claiming_64e12_elements_is_refused_without_allocating(tmp_path):
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("images.npy", npy_bytes((64_000_000, 1_000_000), data=b"\0" * 128))
    started = time.perf_counter()
    info = classify(tmp_path / "huge.npz")
    assert time.perf_counter() - started < 1.0
    assert (
        info.kind is FileKind.TRUNCATED
        and "'images.npy' declares an array [64000000, 1000000]" in info.detail
    )


def test_a_zip_bomb_is_refused_from_its_directory_in_well_under_a_second(tmp_path):
    zip_bomb(tmp_path / "bomb.npz", 256)
    assert os.path.getsize(tmp_path / "bomb.npz") < 2 << 20
    started = time.perf_counter()
    info = classify(tmp_path / "bomb.npz")
    with pytest.raises(InputError) as refused:
        check_declared_size(info, 64 << 20)
    assert time.perf_counter() - started < 1.0
    message = str(refused.value)
    assert "bomb.npz declares 256.0 MiB of data" in message and "more than the limit of 64.0 MiB" in message
    assert "member 'images.npy' inflates from" in message and "--max-input-size" in message
    check_declared_size(info, 512 << 20)  # a larger limit lets it through


def test_pickles_are_scanned_not_run(tmp_path):
    marker = tmp_path / "ran"
    payload = MakesDirectory(marker)
    for protocol in (0, 2, 5):
        (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"images": payload}, protocol=protocol))
        info = classify(tmp_path / "evil.pkl")
        assert info.kind is FileKind.PICKLE and info.globals == ("posix.mkdir",)
    torch.save({"images": torch.zeros(1), "meta": payload}, tmp_path / "evil.pt")
    info = classify(tmp_path / "evil.pt")
    assert info.kind is FileKind.TORCH_ZIP and "posix.mkdir" in torch_pickle_globals(info)
    assert not marker.exists()


def test_a_legacy_torch_file_lists_its_globals(files):
    info = classify(files / "legacy.pt")
    assert "torch._utils._rebuild_tensor_v2" in info.globals and torch_pickle_globals(info) == info.globals


def test_folders_and_missing_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="is a folder, not a file"):
        classify(tmp_path)
    with pytest.raises(InputError, match="cannot read .*nowhere"):
        classify(tmp_path / "nowhere")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InputError, match="pipe is not a regular file"):
        classify(tmp_path / "pipe")


def test_sizes_parse_and_print():
    assert parse_size("8G") == 8 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000
    assert parse_size("1.5k") == 1536 and parse_size(42) == 42
    for bad in ("lots", "-1", "0", "8X"):
        with pytest.raises(InputError, match="size"):
            parse_size(bad)
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(3) == "3 B" and human_bytes(5 << 40) == "5.0 TiB"


def test_an_image_bigger_than_the_limit_is_refused_from_its_header(tmp_path):
    png = tmp_path / "huge.png"
    png.write_bytes(png_header(20_000, 20_000))
    with pytest.raises(InputError, match=r"huge\.png is 20000x20000 \(1\.1 GiB decoded\).*--max-input-size"):
        check_image_size(png, 20_000, 20_000, 3, 1 << 30)

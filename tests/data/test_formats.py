"""MNIST-family IDX files, SVHN .mat files and oversized images, written by the tests in the real formats."""

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets
from PIL import Image

from ddrank.data.download import default_data_root
from ddrank.data.real import DATASETS, dataset_info, load_real, normalize
from ddrank.errors import DataError, InputError
from ddrank.paths import cache_dir
from ddrank.planning import TRAIN_IMAGES

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: 0x0000, type 0x08, ndim, big-endian dims, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compressed: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if compressed:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(idx_bytes(array)))
    else:
        path.write_bytes(idx_bytes(array))
    return path


def write_mnist_like(root: Path, folder: str, compressed: bool, counts=(12, 5), seed=0) -> dict:
    """The four IDX files under ``root/<folder>/raw``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    written = {}
    for (split, (images_name, labels_name)), count in zip(IDX_FILES.items(), counts, strict=True):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        write_idx(root / folder / "raw" / images_name, images, compressed)
        write_idx(root / folder / "raw" / labels_name, labels, compressed)
        written[split] = (images, labels)
    return written


def write_svhn(root: Path, counts=(7, 4), seed=0) -> dict:
    """train_32x32.mat and test_32x32.mat as SVHN ships them: X (32, 32, 3, N), y (N, 1) with 10 for 0."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in zip(("train", "test"), counts, strict=True):
        images = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
        digits = rng.integers(1, 11, size=(count, 1), dtype=np.uint8)
        digits[0, 0] = 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images, "y": digits})
        written[split] = (images, digits)
    return written


# --- registry ----------------------------------------------------------------------------------


def test_new_datasets_have_dc_statistics_and_sizes():
    mnist, fashion, kmnist, svhn = (dataset_info(n) for n in ("mnist", "FashionMNIST", "kmnist", "svhn"))
    assert (mnist.channels, mnist.size, mnist.num_classes, mnist.mean, mnist.std) == (
        1, 28, 10, (0.1307,), (0.3081,)
    )  # fmt: skip
    assert (fashion.name, fashion.mean, fashion.std) == ("fashion-mnist", (0.2861,), (0.3530,))
    assert (kmnist.channels, kmnist.size) == (1, 28)
    assert (svhn.channels, svhn.size, svhn.mean, svhn.std) == (
        3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    )  # fmt: skip
    assert dataset_info("fmnist").name == dataset_info("fashion_mnist").name == "fashion-mnist"


def test_train_sizes_live_in_dataset_info_and_planning_derives_them():
    sizes = {
        name: dataset_info(name).train_size for name in ("digits", "cifar10", "mnist", "svhn", "imagenet1k")
    }
    assert sizes == {
        "digits": 1257,
        "cifar10": 50_000,
        "mnist": 60_000,
        "svhn": 73_257,
        "imagenet1k": 1_281_167,
    }
    assert dataset_info("imagefolder").train_size is None and "imagefolder" not in TRAIN_IMAGES
    assert {
        e.name: e.value.info.train_size for e in DATASETS.entries() if e.value.info.train_size is not None
    } == TRAIN_IMAGES
    assert len(load_real("digits").train_labels) == TRAIN_IMAGES["digits"]


# --- IDX ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")]
)
def test_mnist_family_reads_torchvision_raw_layout(tmp_path, name, folder, compressed):
    written = write_mnist_like(tmp_path, folder, compressed)
    data = load_real(name, tmp_path)
    assert data.train_images.shape == (12, 1, 28, 28) and data.test_images.shape == (5, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    for split in ("train", "test"):
        images, labels = written[split]
        assert np.array_equal(getattr(data, f"{split}_images")[:, 0].numpy(), images)
        assert getattr(data, f"{split}_labels").tolist() == labels.tolist()
    assert data.classes == list(getattr(torchvision.datasets, folder).classes)
    assert normalize(data.train_images, data.info).shape == (12, 1, 28, 28)


def test_gzipped_and_plain_files_give_the_same_fingerprint(tmp_path):
    write_mnist_like(tmp_path / "plain", "MNIST", compressed=False)
    write_mnist_like(tmp_path / "gz", "MNIST", compressed=True)
    assert (
        load_real("mnist", tmp_path / "plain").fingerprint == load_real("mnist", tmp_path / "gz").fingerprint
    )


def test_mnist_root_may_be_the_raw_folder_and_missing_files_are_named(tmp_path):
    write_mnist_like(tmp_path, "MNIST", compressed=True)
    assert load_real("mnist", tmp_path / "MNIST" / "raw").train_images.shape[0] == 12
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match=r"raw lacks t10k-labels-idx1-ubyte \(plain or .gz\)"):
        load_real("mnist", tmp_path)
    with pytest.raises(
        InputError, match=r"FashionMNIST/raw lacks train-images-idx3-ubyte.*torchvision's FashionMNIST"
    ):
        load_real("fashion-mnist", tmp_path)


def corrupt(path: Path, content: bytes) -> None:
    if path.suffix == ".gz":
        content = gzip.compress(content)
    path.write_bytes(content)


@pytest.mark.parametrize("compressed", [False, True])
def test_bad_idx_files_are_refused_with_the_file_named(tmp_path, compressed):
    write_mnist_like(tmp_path, "MNIST", compressed)
    suffix = ".gz" if compressed else ""
    images = tmp_path / "MNIST" / "raw" / f"train-images-idx3-ubyte{suffix}"
    good = idx_bytes(np.zeros((12, 28, 28), np.uint8))
    cases = [
        (good[:-100], rf"{re.escape(str(images))} is truncated"),
        (good + b"\0" * 10, rf"{re.escape(str(images))} is longer than its header says"),
        (b"\x12\x34" + good[2:], "is not an IDX file"),
        (idx_bytes(np.zeros((12, 28, 27), np.uint8)), r"shape \[12, 28, 27\], expected \[12, 28, 28\]"),
        (idx_bytes(np.zeros((12, 784), np.uint8)), "holds a 2-d uint8 IDX array, expected 3-d uint8"),
        (good[:6], "is truncated: it ends inside its header"),
    ]
    for content, message in cases:
        corrupt(images, content)
        with pytest.raises(DataError, match=message) as caught:
            load_real("mnist", tmp_path)
        assert "\n" not in str(caught.value)
    assert list(cache_dir("datasets").iterdir()) == []


def test_idx_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path, monkeypatch):
    write_mnist_like(tmp_path, "MNIST", compressed=False)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 4_000_000_000) + b"\0" * 12)
    with pytest.raises(DataError, match=r"is truncated: its header declares 4,000,000,000 data bytes"):
        load_real("mnist", tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28))
    with pytest.raises(DataError, match=r"over the 4,294,967,296-byte limit; .*DDRANK_MAX_DATASET_BYTES"):
        load_real("mnist", tmp_path)
    write_mnist_like(tmp_path, "MNIST", compressed=False)
    monkeypatch.setenv("DDRANK_MAX_DATASET_BYTES", "1000")
    with pytest.raises(
        DataError, match=r"declares an IDX array \[12, 28, 28\] of 9,408 bytes, over the 1,000"
    ):
        load_real("mnist", tmp_path)


def test_truncated_and_corrupt_gzip_streams_are_named(tmp_path):
    write_mnist_like(tmp_path, "MNIST", compressed=True)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    packed = images.read_bytes()
    images.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is truncated or not a valid gzip'd IDX"):
        load_real("mnist", tmp_path)
    images.write_bytes(packed[:20] + bytes(b ^ 0xFF for b in packed[20:40]) + packed[40:])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_real("mnist", tmp_path)
    # a gzip bomb: a tiny file whose header declares 12 images but inflates to far more
    bomb = gzip.compress(idx_bytes(np.zeros((12, 28, 28), np.uint8)) + b"\0" * 50_000_000, 9)
    assert len(bomb) < 100_000
    images.write_bytes(bomb)
    with pytest.raises(DataError, match="is longer than its header says"):
        load_real("mnist", tmp_path)


def test_labels_must_match_images(tmp_path):
    write_mnist_like(tmp_path, "MNIST", compressed=False)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(11, np.uint8), compressed=False)
    with pytest.raises(DataError, match=r"holds 11 labels for the 12 images of"):
        load_real("mnist", tmp_path)
    write_idx(raw / "train-labels-idx1-ubyte", np.full(12, 10, np.uint8), compressed=False)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\), got \[10, 10\]"):
        load_real("mnist", tmp_path)


# --- SVHN ---------------------------------------------------------------------------------------


def test_svhn_reads_the_mat_files_and_maps_label_10_to_0(tmp_path):
    written = write_svhn(tmp_path)
    data = load_real("svhn", tmp_path)
    assert data.train_images.shape == (7, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.classes == [str(d) for d in range(10)]
    for split in ("train", "test"):
        images, digits = written[split]
        expected = torchvision_svhn_arrays(images, digits)
        assert np.array_equal(getattr(data, f"{split}_images").numpy(), expected[0])
        assert getattr(data, f"{split}_labels").tolist() == expected[1].tolist()
    assert data.train_labels[0] == 0 and int(data.train_labels.max()) <= 9
    image, row, col = data.train_images[3], 5, 17
    assert image[2, row, col] == written["train"][0][row, col, 2, 3]


def torchvision_svhn_arrays(images: np.ndarray, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What torchvision's SVHN makes of X and y: transpose (3, 2, 0, 1), label 10 -> 0."""
    labels = digits.astype(np.int64).squeeze(1)
    np.place(labels, labels == 10, 0)
    return np.transpose(images, (3, 2, 0, 1)), labels


def test_svhn_layout_and_content_errors(tmp_path):
    with pytest.raises(InputError, match=r"train_32x32.mat is missing: dataset 'svhn' expects"):
        load_real("svhn", tmp_path)
    write_svhn(tmp_path)
    train = tmp_path / "train_32x32.mat"
    packed = train.read_bytes()
    train.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"train_32x32.mat has no variable 'y' \(found \['X'\]\): truncated"):
        load_real("svhn", tmp_path)
    train.write_bytes(packed[:-3])
    with pytest.raises(DataError, match=r"train_32x32.mat is truncated or corrupt"):
        load_real("svhn", tmp_path)
    train.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match=r"cannot read .*train_32x32.mat as a MATLAB .mat file"):
        load_real("svhn", tmp_path)
    scipy.io.savemat(train, {"X": np.zeros((28, 28, 1, 3), np.uint8), "y": np.ones((3, 1), np.uint8)})
    with pytest.raises(
        DataError, match=r"'X' should be uint8 \(32, 32, 3, N\), found uint8 \(28, 28, 1, 3\)"
    ):
        load_real("svhn", tmp_path)
    scipy.io.savemat(train, {"images": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(DataError, match=r"has no variable 'X' \(found \['images'\]\)"):
        load_real("svhn", tmp_path)
    scipy.io.savemat(train, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[3], [11]], np.uint8)})
    with pytest.raises(DataError, match=r"'y' should hold digits 1..10 \(10 for 0\), got \[3, 11\]"):
        load_real("svhn", tmp_path)
    assert list(cache_dir("datasets").iterdir()) == []


def test_svhn_files_or_headers_over_the_limit_are_refused_before_loading(tmp_path, monkeypatch):
    write_svhn(tmp_path)
    monkeypatch.setenv("DDRANK_MAX_DATASET_BYTES", "15000")
    with pytest.raises(
        DataError, match=r"train_32x32.mat declares a file of 21,760 bytes, over the 15,000-byte"
    ):
        load_real("svhn", tmp_path)
    # A compressed variable inflating far beyond the file: the header's shape is checked before loading.
    scipy.io.savemat(
        tmp_path / "train_32x32.mat",
        {"X": np.zeros((32, 32, 3, 400), np.uint8), "y": np.ones((400, 1), np.uint8)},
        do_compression=True,
    )
    assert (tmp_path / "train_32x32.mat").stat().st_size < 15_000
    with pytest.raises(
        DataError, match=r"declares 'X' \(32, 32, 3, 400\) of 1,228,800 bytes, over the 15,000"
    ):
        load_real("svhn", tmp_path)


# --- oversized images ---------------------------------------------------------------------------


def write_class_tree(root: Path, classes: list[str], per_class: int) -> None:
    for split in ("train", "val"):
        for label, name in enumerate(classes):
            for index in range(per_class):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                pixels = np.full((20, 20, 3), label * 10 + index, np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{index:03d}.png")


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (grey), with a token IDAT: cheap to write."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("width", "height"), [(20_000, 20_000), (9_000, 9_000)])
def test_huge_images_are_refused_from_their_header(tmp_path, width, height):
    write_class_tree(tmp_path, ["a", "b"], per_class=1)
    huge = tmp_path / "train" / "b" / "huge.png"
    png_header_only(huge, width, height)
    with pytest.raises(DataError, match=rf"image {re.escape(str(huge))} .*67,108,864") as caught:
        load_real("imagefolder", tmp_path)
    assert "\n" not in str(caught.value)
    assert list(cache_dir("datasets").iterdir()) == []


def test_the_image_limit_can_be_raised_or_lowered(tmp_path, monkeypatch):
    write_class_tree(tmp_path, ["a", "b"], per_class=1)  # 20x20 images
    monkeypatch.setenv("DDRANK_MAX_IMAGE_PIXELS", "399")
    with pytest.raises(
        DataError, match=r"is 20x20 \(400 pixels\), over the 399-pixel limit; .*DDRANK_MAX_IMAGE_PIXELS"
    ):
        load_real("imagefolder", tmp_path)
    monkeypatch.setenv("DDRANK_MAX_IMAGE_PIXELS", "400")
    assert load_real("imagefolder", tmp_path).train_images.shape == (2, 3, 32, 32)
    monkeypatch.setenv("DDRANK_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="DDRANK_MAX_IMAGE_PIXELS='lots' must be a positive integer"):
        load_real("imagefolder", tmp_path, size=16)
    monkeypatch.setenv("DDRANK_MAX_IMAGE_PIXELS", " ")  # blank, as unset: the default limit
    assert load_real("imagefolder", tmp_path, size=16).train_images.shape == (2, 3, 16, 16)


# --- the default data root ----------------------------------------------------------------------


def test_the_default_data_root_is_used_when_it_holds_the_dataset():
    root = default_data_root()
    assert root == cache_dir("data")
    with pytest.raises(
        InputError, match=rf"needs --data-root .*; or pass --download .* into {re.escape(str(root))}"
    ):
        load_real("mnist")
    write_mnist_like(root, "MNIST", compressed=True)
    assert load_real("mnist").train_images.shape == (12, 1, 28, 28)

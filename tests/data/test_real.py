"""Real-dataset loaders, on small fake datasets written in the real on-disk formats."""

import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddrank.data import readers
from ddrank.data.real import DATASETS, DatasetInfo, RealData, dataset_info, load_real, normalize
from ddrank.errors import ConfigError, InputError, UnknownNameError
from ddrank.paths import cache_dir

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY_WNIDS = [f"n{index:08d}" for index in range(200)]


# --- fake dataset writers -----------------------------------------------------------------------


def write_image(path: Path, pixels: np.ndarray) -> None:
    """Write an HWC uint8 array as an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix.lower() == ".png" else None)


def solid_image(label: int, index: int, size: int = 64) -> np.ndarray:
    """An HWC image whose pixels say which class and which sample it is."""
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[..., 0] = label % 256
    pixels[..., 1] = index % 256
    pixels[..., 2] = np.arange(size, dtype=np.uint8)[None, :]
    return pixels


def dump_pickle(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump(content, file, protocol=2)


def cifar_batch(rng: np.random.Generator, count: int, label_key: bytes, num_classes: int) -> dict:
    return {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
        label_key: [int(label) for label in rng.integers(0, num_classes, size=count)],
        b"filenames": [f"img_{i}.png".encode() for i in range(count)],
    }


def write_cifar10(root: Path, per_batch: int = 3, seed: int = 0) -> dict[str, dict]:
    """A CIFAR-10 python tree under ``root/cifar-10-batches-py``; returns the written batches."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    batches = {f"data_batch_{i}": cifar_batch(rng, per_batch, b"labels", 10) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, per_batch + 1, b"labels", 10)
    for name, batch in batches.items():
        dump_pickle(folder / name, batch)
    dump_pickle(
        folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
    )
    return batches


def write_cifar100(root: Path, count: int = 7) -> dict[str, dict]:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    batches = {split: cifar_batch(rng, count, b"fine_labels", 100) for split in ("train", "test")}
    for name, batch in batches.items():
        batch[b"coarse_labels"] = [label // 5 for label in batch[b"fine_labels"]]
        dump_pickle(folder / name, batch)
    names = [f"class_{i:03d}".encode() for i in range(100)]
    dump_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    return batches


def write_tinyimagenet(root: Path, val_layout: str) -> Path:
    """A 200-class Tiny ImageNet tree, one 64x64 PNG per class in train and val.

    ``val_layout`` is "annotations" (the raw download: val/images + val_annotations.txt, train images
    under <wnid>/images/) or "folders" (val/<wnid>/, train images directly in <wnid>/).
    """
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(reversed(TINY_WNIDS)) + "\n")
    annotations = []
    for label, wnid in enumerate(TINY_WNIDS):
        train_folder = root / "train" / wnid / ("images" if val_layout == "annotations" else "")
        write_image(train_folder / f"{wnid}_0.png", solid_image(label, 0))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.png\t0\t0\t63\t63\n")
        val_name = f"val_{label}.png"
        if val_layout == "annotations":
            write_image(root / "val" / "images" / val_name, solid_image(label, 1))
            annotations.append(f"{val_name}\t{wnid}\t0\t0\t63\t63")
        else:
            write_image(root / "val" / wnid / val_name, solid_image(label, 1))
    if val_layout == "annotations":
        (root / "val" / "val_annotations.txt").write_text("\n".join(reversed(annotations)) + "\n")
    return root


def write_class_tree(
    root: Path, classes: list[str], per_class: int = 2, split_names=("train", "val")
) -> Path:
    for split_index, split in enumerate(split_names):
        for label, name in enumerate(classes):
            for index in range(per_class):
                write_image(
                    root / split / name / f"{index:03d}.png", solid_image(label, 10 * split_index + index, 20)
                )
    return root


@pytest.fixture(scope="module")
def tiny_trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny")
    return {layout: write_tinyimagenet(base / layout, layout) for layout in ("annotations", "folders")}


@pytest.fixture
def count_image_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    original = Image.open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


# --- registry and info --------------------------------------------------------------------------


def test_registry_holds_every_dataset_with_a_description():
    expected = {
        "digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "kmnist", "svhn", "tinyimagenet",
        "imagenet1k", "imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow",
        "imagefolder",
    }  # fmt: skip
    assert set(DATASETS.names()) == expected
    for entry in DATASETS.entries():
        assert entry.description and "\n" not in entry.description
        assert entry.value.info.name == entry.name


def test_dataset_info_gives_spec_values():
    cifar10 = dataset_info("cifar10")
    assert cifar10 == DatasetInfo(
        "cifar10",
        10,
        3,
        32,
        (0.4914, 0.4822, 0.4465),
        (0.2023, 0.1994, 0.2010),
        needs_root=True,
        train_size=50_000,
    )
    assert dataset_info("cifar100").mean == (0.5071, 0.4866, 0.4409)
    assert dataset_info("cifar100").std == (0.2673, 0.2564, 0.2762)
    tiny = dataset_info("tinyimagenet")
    assert (tiny.num_classes, tiny.size) == (200, 64)
    assert (tiny.mean, tiny.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (dataset_info("imagenet1k").num_classes, dataset_info("imagenet1k").size) == (1000, 224)
    for subset in ("imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow"):
        assert (dataset_info(subset).num_classes, dataset_info(subset).size) == (10, 128)
    assert dataset_info("imagefolder").size == 32
    assert [name for name in DATASETS.names() if not dataset_info(name).needs_root] == ["digits"]
    assert dataset_info("CIFAR-10").name == "cifar10"


def test_cifar100_can_take_cifar10_statistics():
    info = dataset_info("cifar100", stats="cifar10")
    assert (info.name, info.num_classes) == ("cifar100", 100)
    assert (info.mean, info.std) == (dataset_info("cifar10").mean, dataset_info("cifar10").std)
    assert dataset_info("cifar100", stats="cifar100") == dataset_info("cifar100")


def test_stats_option_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="dataset 'cifar10' has no normalisation statistics 'cifar100'"):
        dataset_info("cifar10", stats="cifar100")
    with pytest.raises(ConfigError, match="no normalisation statistics 'imagenet'"):
        dataset_info("cifar100", stats="imagenet")
    with pytest.raises(ConfigError, match="'tinyimagenet' has no normalisation statistics"):
        load_real("tinyimagenet", "/nonexistent", stats="cifar10")


def test_unknown_dataset_names_close_matches():
    with pytest.raises(UnknownNameError, match="unknown dataset 'cifar1'; did you mean 'cifar10'"):
        dataset_info("cifar1")
    with pytest.raises(UnknownNameError, match="did you mean 'imagenette'"):
        load_real("imagenete", "/tmp")


# --- digits -------------------------------------------------------------------------------------


def test_digits_split_is_fixed_and_stratified():
    data = load_real("digits")
    assert isinstance(data, RealData)
    assert data.train_images.shape == (1257, 1, 8, 8) and data.test_images.shape == (540, 1, 8, 8)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.classes == [str(d) for d in range(10)] and data.info.num_classes == 10
    assert int(data.train_images.max()) == 255 and int(data.train_images.min()) == 0
    train_counts = torch.bincount(data.train_labels, minlength=10)
    test_counts = torch.bincount(data.test_labels, minlength=10)
    assert (train_counts > 0).all() and (test_counts > 0).all()
    fractions = test_counts.double() / (train_counts + test_counts).double()
    assert torch.allclose(fractions, torch.full((10,), 0.3, dtype=torch.double), atol=0.01)
    again = load_real("digits", root="/ignored")
    assert torch.equal(again.train_images, data.train_images)
    assert torch.equal(again.test_labels, data.test_labels)
    assert again.fingerprint == data.fingerprint and len(data.fingerprint) == 64


def test_digits_pixels_are_scaled_from_sklearn():
    from sklearn.datasets import load_digits

    values = {round(v * 255 / 16) for v in range(17)}
    data = load_real("digits")
    assert set(torch.unique(data.train_images).tolist()) <= values
    assert int(data.train_images.sum()) + int(data.test_images.sum()) == int(
        np.round(load_digits().images * 255 / 16).sum()
    )


def test_digits_split_is_read_back_from_the_cache_without_scikit_learn():
    first = load_real("digits")  # splits with scikit-learn and caches the arrays
    (cached,) = cache_dir("datasets").glob("digits-sklearn-*.npz")
    code = (
        "import sys; from ddrank.data.real import load_real; "
        "print(load_real('digits').fingerprint, 'sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [first.fingerprint, "False"]
    # read back, the images are the same tensors down to their memory layout, which decides the
    # convolution kernel and so the last bits of every model trained on them
    again = load_real("digits")
    assert again.train_images.stride() == first.train_images.stride()
    conv = torch.nn.Conv2d(1, 4, 3)
    outputs = [conv(normalize(d.train_images, d.info)) for d in (first, again)]
    assert torch.equal(*outputs) and outputs[0].stride() == outputs[1].stride()
    cached.write_bytes(b"damaged")  # an unreadable entry is split again and rewritten
    assert load_real("digits").fingerprint == first.fingerprint
    assert np.load(cached)["train_labels"].shape == first.train_labels.shape


def test_digits_statistics_match_the_train_split():
    data = load_real("digits")
    pixels = data.train_images.double() / 255
    assert abs(pixels.mean().item() - data.info.mean[0]) < 1e-4
    assert abs(pixels.std(unbiased=False).item() - data.info.std[0]) < 1e-4
    normalized = normalize(data.train_images, data.info)
    assert abs(normalized.mean().item()) < 1e-3 and abs(normalized.std().item() - 1) < 1e-2


def test_digits_loads_quickly_once_imported():
    load_real("digits")
    start = time.perf_counter()
    load_real("digits")
    assert time.perf_counter() - start < 0.5


def test_digits_size_cannot_change():
    assert load_real("digits", size=8).info.size == 8
    with pytest.raises(ConfigError, match="dataset 'digits' is stored at 8x8; size=16 applies only"):
        load_real("digits", size=16)


# --- normalize ----------------------------------------------------------------------------------


def test_normalize_matches_the_formula_for_any_leading_dims():
    info = dataset_info("cifar10")
    images = torch.randint(0, 256, (2, 4, 3, 5, 5), dtype=torch.uint8)
    out = normalize(images, info)
    assert out.dtype == torch.float32 and out.shape == images.shape and out.device == images.device
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    assert torch.allclose(out, (images.float() / 255 - mean) / std)


def test_normalize_rejects_wrong_dtype_or_channels():
    with pytest.raises(InputError, match="normalize expects uint8 images, got torch.float32"):
        normalize(torch.zeros(1, 3, 4, 4), dataset_info("cifar10"))
    with pytest.raises(InputError, match=r"expects images \[\.\.\., 1, H, W\] for dataset 'digits'"):
        normalize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), dataset_info("digits"))


# --- CIFAR --------------------------------------------------------------------------------------


def test_cifar10_loads_the_pickle_layout(tmp_path):
    batches = write_cifar10(tmp_path)
    data = load_real("cifar10", tmp_path)
    assert data.train_images.shape == (15, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.test_labels.dtype == torch.int64
    assert data.classes == CIFAR10_NAMES and data.info == dataset_info("cifar10")
    expected_labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][b"labels"]]
    assert data.train_labels.tolist() == expected_labels
    assert data.test_labels.tolist() == batches["test_batch"][b"labels"]
    row = batches["data_batch_2"][b"data"][1]
    image = data.train_images[3 + 1]
    assert image[0, 0, 0] == row[0] and image[1, 0, 0] == row[1024] and image[2, 31, 31] == row[3071]
    assert image[0, 2, 5] == row[2 * 32 + 5]
    assert np.array_equal(data.test_images.numpy().reshape(4, 3072), batches["test_batch"][b"data"])


def test_cifar_root_may_be_the_batches_folder(tmp_path):
    write_cifar10(tmp_path)
    from_parent = load_real("cifar10", tmp_path)
    from_folder = load_real("cifar10", str(tmp_path / "cifar-10-batches-py"))
    assert from_folder.fingerprint == from_parent.fingerprint
    assert torch.equal(from_folder.train_images, from_parent.train_images)


def test_cifar100_uses_fine_labels_and_stats_option(tmp_path):
    batches = write_cifar100(tmp_path)
    data = load_real("cifar100", tmp_path, stats="cifar10")
    assert data.train_images.shape == (7, 3, 32, 32) and data.info.num_classes == 100
    assert data.train_labels.tolist() == batches["train"][b"fine_labels"]
    assert data.classes[:2] == ["class_000", "class_001"] and len(data.classes) == 100
    assert data.info.mean == dataset_info("cifar10").mean
    assert load_real("cifar100", tmp_path).info.mean == (0.5071, 0.4866, 0.4409)


def test_cifar_size_cannot_change(tmp_path):
    with pytest.raises(ConfigError, match="dataset 'cifar10' is stored at 32x32; size=64 applies only"):
        load_real("cifar10", tmp_path, size=64)


def test_missing_root_says_which_option_to_set(tmp_path):
    with pytest.raises(InputError, match="dataset 'cifar10' needs --data-root .*cifar-10-batches-py"):
        load_real("cifar10")
    with pytest.raises(InputError, match="dataset 'imagenette' needs --data-root .*train/<class>"):
        load_real("imagenette")
    with pytest.raises(
        InputError,
        match=f"data root {re.escape(str(tmp_path / 'nope'))} for dataset 'cifar10' does not exist",
    ):
        load_real("cifar10", tmp_path / "nope")


def test_cifar_missing_files_are_named(tmp_path):
    with pytest.raises(
        InputError, match=f"no cifar10 files in {re.escape(str(tmp_path))}: expected .*cifar-10-batches-py/"
    ):
        load_real("cifar10", tmp_path)
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(InputError, match="data_batch_3 is missing: dataset 'cifar10' expects .*test_batch"):
        load_real("cifar10", tmp_path)
    with pytest.raises(
        InputError, match="no cifar100 files in .*cifar-100-python/ holding train, test, meta"
    ):
        load_real("cifar100", tmp_path)


def test_cifar_batch_content_is_checked(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    dump_pickle(folder / "data_batch_1", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(InputError, match=r"data_batch_1: 'data' should be uint8 \[N, 3072\]"):
        load_real("cifar10", tmp_path)
    dump_pickle(folder / "data_batch_1", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(InputError, match=r"data_batch_1: labels must lie in \[0, 10\), got \[0, 10\]"):
        load_real("cifar10", tmp_path)
    dump_pickle(folder / "data_batch_1", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(InputError, match="data_batch_1 has no 'labels' entry"):
        load_real("cifar10", tmp_path)
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="cannot read .*data_batch_1 as a CIFAR python pickle"):
        load_real("cifar10", tmp_path)


def test_cifar_pickles_cannot_run_code(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "executed"
    payload = type("Payload", (), {"__reduce__": lambda self: (os.mkdir, (str(marker),))})()
    dump_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": payload})
    with pytest.raises(InputError, match="refusing to unpickle posix.mkdir|refusing to unpickle nt.mkdir"):
        load_real("cifar10", tmp_path)
    assert not marker.exists()


def test_cifar_cache_is_keyed_by_file_size_and_mtime(tmp_path):
    write_cifar10(tmp_path)
    first = load_real("cifar10", tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    stat = batch.stat()
    content = pickle.loads(batch.read_bytes())
    content[b"data"][0, 0] ^= 0x7F
    batch.write_bytes(pickle.dumps(content, protocol=2))
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_real("cifar10", tmp_path).fingerprint == first.fingerprint  # served from the cache
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = load_real("cifar10", tmp_path)
    assert changed.fingerprint != first.fingerprint
    assert int(changed.test_images[0, 0, 0, 0]) == int(first.test_images[0, 0, 0, 0]) ^ 0x7F
    assert len([p for p in cache_dir("datasets").iterdir()]) == 1  # the stale entry is gone


# --- Tiny ImageNet ------------------------------------------------------------------------------


def test_tinyimagenet_both_val_layouts_give_the_same_data(tiny_trees):
    raw = load_real("tinyimagenet", tiny_trees["annotations"])
    folders = load_real("tinyimagenet", tiny_trees["folders"])
    assert raw.train_images.shape == (200, 3, 64, 64) and raw.test_images.shape == (200, 3, 64, 64)
    assert raw.classes == TINY_WNIDS and raw.info.num_classes == 200
    assert raw.train_labels.tolist() == list(range(200)) and raw.test_labels.tolist() == list(range(200))
    assert raw.fingerprint == folders.fingerprint
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(raw, name), getattr(folders, name))
    image = raw.test_images[17].permute(1, 2, 0).numpy()
    assert np.array_equal(image, solid_image(17, 1))


def test_tinyimagenet_root_may_be_the_parent_folder(tiny_trees, tmp_path):
    (tmp_path / "tiny-imagenet-200").symlink_to(tiny_trees["folders"], target_is_directory=True)
    data = load_real("tiny-imagenet", tmp_path, size=32)
    assert data.train_images.shape == (200, 3, 32, 32) and data.info.size == 32


def test_tinyimagenet_layout_errors(tiny_trees, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(tiny_trees["annotations"], root)
    annotations = root / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    annotations.write_text("\n".join([*lines, "missing.png\tn00000003\t0\t0\t1\t1"]))
    with pytest.raises(InputError, match=r"val_annotations.txt:201: .*missing.png does not exist"):
        load_real("tinyimagenet", root)
    annotations.write_text("\n".join([*lines, "val_0.png\tn99999999\t0\t0\t1\t1"]))
    with pytest.raises(
        InputError, match=r"val_annotations.txt:201: class 'n99999999' has no folder in train/"
    ):
        load_real("tinyimagenet", root)
    annotations.write_text("\n".join(line for line in lines if "\tn00000007\t" not in line))
    with pytest.raises(
        InputError, match="val_annotations.txt lists no validation image for classes n00000007"
    ):
        load_real("tinyimagenet", root)
    annotations.unlink()
    with pytest.raises(
        InputError, match=r"val_annotations.txt is missing: .*images holds images without class"
    ):
        load_real("tinyimagenet", root)
    (root / "wnids.txt").write_text("\n".join([*TINY_WNIDS[1:], "n12345678"]))
    with pytest.raises(
        InputError, match=r"wnids.txt does not match the class folders of .*n12345678.*n00000000"
    ):
        load_real("tinyimagenet", root)
    shutil.rmtree(root / "val")
    with pytest.raises(
        InputError, match=r"val is missing: dataset 'tinyimagenet' expects .*val_annotations.txt"
    ):
        load_real("tinyimagenet", root)


def test_tinyimagenet_needs_200_classes(tmp_path):
    write_class_tree(tmp_path, ["n1", "n2"], per_class=1)
    with pytest.raises(
        InputError, match=r"dataset 'tinyimagenet' expects 200 class folders in .*train, found 2"
    ):
        load_real("tinyimagenet", tmp_path)


# --- class-folder trees -------------------------------------------------------------------------


def test_imagefolder_reads_sorted_classes_at_the_requested_size(tmp_path):
    write_class_tree(tmp_path, ["zebra", "ant", "moth"], per_class=2)
    data = load_real("imagefolder", tmp_path, size=20)
    assert data.classes == ["ant", "moth", "zebra"]
    assert data.info.num_classes == 3 and data.info.size == 20 and data.info.channels == 3
    assert data.train_images.shape == (6, 3, 20, 20) and data.test_images.shape == (6, 3, 20, 20)
    assert data.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(data.train_images[5].permute(1, 2, 0).numpy(), solid_image(0, 1, 20))
    assert np.array_equal(data.test_images[0].permute(1, 2, 0).numpy(), solid_image(1, 10, 20))
    assert load_real("imagefolder", tmp_path).train_images.shape == (6, 3, 32, 32)


def test_images_are_resized_like_torchvision(tmp_path):
    from torchvision.transforms import CenterCrop, Compose, Resize

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, size=(30, 47, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, size=(41, 13), dtype=np.uint8)
    write_image(tmp_path / "train" / "a" / "wide.png", wide)
    write_image(tmp_path / "train" / "b" / "tall.png", tall)
    write_image(tmp_path / "test" / "a" / "x.jpg", wide)
    write_image(tmp_path / "test" / "b" / "y.png", tall)
    data = load_real("imagefolder", tmp_path, size=16)
    reference = Compose([Resize(16), CenterCrop(16)])
    for image, pixels in zip(data.train_images, (wide, tall), strict=True):
        expected = np.asarray(reference(Image.fromarray(pixels).convert("RGB"))).transpose(2, 0, 1)
        assert np.array_equal(image.numpy(), expected)
    assert data.test_images.shape == (2, 3, 16, 16)


def test_imagenette_tree_at_default_size(tmp_path):
    wnids = [f"n0{index}" for index in range(10)]
    write_class_tree(tmp_path, wnids, per_class=1)
    (tmp_path / "train" / "n03" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "n03" / "._000.png").write_bytes(b"resource fork")
    data = load_real("imagenette", tmp_path)
    assert data.train_images.shape == (10, 3, 128, 128) and data.classes == wnids
    assert data.info == dataset_info("imagenette")
    assert torch.all(data.train_images[4, 0] == 4)


def test_class_folder_errors(tmp_path):
    wnids = [f"n0{index}" for index in range(10)]
    write_class_tree(tmp_path, wnids, per_class=1)
    shutil.rmtree(tmp_path / "val" / "n07")
    with pytest.raises(
        InputError, match=r"class folders differ between .*train and .*val: missing from val/: n07"
    ):
        load_real("imagenette", tmp_path)
    write_image(tmp_path / "val" / "n07" / "a.png", solid_image(7, 0, 20))
    write_image(tmp_path / "val" / "extra" / "a.png", solid_image(7, 0, 20))
    with pytest.raises(InputError, match="only in val/: extra"):
        load_real("imagenette", tmp_path)
    shutil.rmtree(tmp_path / "val" / "extra")
    shutil.rmtree(tmp_path / "train" / "n09")
    with pytest.raises(
        InputError, match=r"'imagenette' expects 10 class folders in .*train, found 9; use 'imagefolder'"
    ):
        load_real("imagenette", tmp_path)
    (tmp_path / "train" / "n09").mkdir()
    with pytest.raises(
        InputError, match=r"class folder .*train/n09 holds no images \(expected files ending in .jpg"
    ):
        load_real("imagenette", tmp_path)


def test_missing_splits_are_named(tmp_path):
    with pytest.raises(
        InputError, match=f"expects a class-folder tree .*; {re.escape(str(tmp_path / 'train'))} is missing"
    ):
        load_real("imagefolder", tmp_path)
    write_class_tree(tmp_path, ["a"], per_class=1, split_names=("train",))
    with pytest.raises(InputError, match=re.escape(f"neither {tmp_path}/val nor {tmp_path}/test exists")):
        load_real("imagefolder", tmp_path)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "0001.JPEG").write_bytes(b"")
    with pytest.raises(InputError, match=r"val holds no class folders; expected .*val/<class>/<image>"):
        load_real("imagefolder", tmp_path)
    (tmp_path / "val" / "0001.JPEG").unlink()
    shutil.rmtree(tmp_path / "train" / "a")
    with pytest.raises(InputError, match=r"train holds no class folders; expected .*train/<class>/<image>"):
        load_real("imagefolder", tmp_path)


def test_undecodable_image_is_named_and_leaves_no_cache(tmp_path):
    write_class_tree(tmp_path, ["a", "b"], per_class=2)
    broken = tmp_path / "val" / "b" / "001.png"
    broken.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=f"cannot decode image {re.escape(str(broken))}"):
        load_real("imagefolder", tmp_path)
    assert list(cache_dir("datasets").iterdir()) == []
    write_image(broken, solid_image(1, 11, 20))
    assert load_real("imagefolder", tmp_path).test_images.shape == (4, 3, 32, 32)


def test_invalid_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="size must be a positive integer, got 0"):
        load_real("imagefolder", tmp_path, size=0)


# --- caching and fingerprints -------------------------------------------------------------------


def test_second_load_decodes_nothing(tmp_path, count_image_opens):
    write_class_tree(tmp_path, ["a", "b", "c"], per_class=3)
    first = load_real("imagefolder", tmp_path, size=24)
    assert len(count_image_opens) == 18
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = load_real("imagefolder", tmp_path, size=24)
    assert len(count_image_opens) == 18
    assert second.fingerprint == first.fingerprint and second.classes == first.classes
    assert torch.equal(second.train_images, first.train_images)
    assert second.train_images.dtype == torch.uint8 and second.train_labels.dtype == torch.int64
    load_real("imagefolder", tmp_path, size=12)
    assert len(count_image_opens) == 36  # another size is another cache entry


def test_cache_is_rebuilt_when_the_tree_changes(tmp_path, count_image_opens):
    write_class_tree(tmp_path, ["a", "b"], per_class=2)
    first = load_real("imagefolder", tmp_path)
    write_image(tmp_path / "train" / "b" / "new.png", solid_image(1, 99, 20))
    second = load_real("imagefolder", tmp_path)
    assert len(count_image_opens) == 8 + 9
    assert second.train_images.shape[0] == 5 and second.fingerprint != first.fingerprint
    assert len(list(cache_dir("datasets").iterdir())) == 1


def test_fingerprint_depends_on_content_only(tmp_path, monkeypatch):
    write_class_tree(tmp_path / "one", ["a", "b"], per_class=2)
    first = load_real("imagefolder", tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    monkeypatch.setenv("DDRANK_CACHE_DIR", str(tmp_path / "other-cache"))
    assert load_real("imagefolder", tmp_path / "two").fingerprint == first.fingerprint
    pixels = solid_image(0, 0, 20)
    pixels[3, 4, 1] += 1
    write_image(tmp_path / "two" / "train" / "a" / "000.png", pixels)
    assert load_real("imagefolder", tmp_path / "two").fingerprint != first.fingerprint
    (tmp_path / "one" / "val" / "b" / "001.png").rename(tmp_path / "one" / "val" / "a" / "009.png")
    assert load_real("imagefolder", tmp_path / "one").fingerprint != first.fingerprint


def test_interrupted_decode_leaves_no_partial_cache(tmp_path, monkeypatch):
    write_class_tree(tmp_path, ["a", "b"], per_class=2)
    decode = readers.decode_image
    calls = []

    def failing_decode(path, size):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return decode(path, size)

    monkeypatch.setattr(readers, "decode_image", failing_decode)
    with pytest.raises(KeyboardInterrupt):
        load_real("imagefolder", tmp_path)
    assert list(cache_dir("datasets").iterdir()) == []
    monkeypatch.setattr(readers, "decode_image", decode)
    assert load_real("imagefolder", tmp_path).train_images.shape == (4, 3, 32, 32)

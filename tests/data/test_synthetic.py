"""Synthetic-set loading (every on-disk format, written the way the methods write them) and validation."""

import math
import pickle
import time
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddrank.data.synthetic import (
    FORMATS,
    SyntheticSet,
    ValueWarning,
    load_synthetic,
    protocol_warnings,
    validate_synthetic,
)
from ddrank.errors import InputError, UnknownNameError
from malformed import MakesDirectory, npy_bytes, png_header, zip_bomb


class RunMetadata:
    """Stands for the arbitrary objects some methods save next to their images."""

    def __init__(self, note: str):
        self.note = note


def images(n: int = 20, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(n, c, size, size)


def memory_set(
    images: torch.Tensor, labels: torch.Tensor | None = None, lr: float | None = None
) -> SyntheticSet:
    return SyntheticSet(images=images, labels=labels, lr=lr, space=None, source="<memory>", format="tensor")


def write_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ---- formats -------------------------------------------------------------------------------------


def test_formats_are_registered_with_descriptions():
    assert set(FORMATS.names()) == {"tensor", "pt", "datm", "dc", "npz", "imagefolder"}
    assert all(entry.description for entry in FORMATS.entries())


def test_in_memory_tensor():
    x = images()
    syn = load_synthetic(x)
    assert (syn.format, syn.source, syn.labels, syn.lr, syn.space) == ("tensor", "<memory>", None, None, None)
    assert syn.images.dtype == torch.float32 and torch.equal(syn.images, x)


def test_in_memory_numpy_nhwc_is_transposed():
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float64)
    syn = load_synthetic(x)
    assert syn.images.shape == (4, 3, 8, 8) and syn.images.dtype == torch.float32
    assert torch.allclose(syn.images, torch.from_numpy(x.transpose(0, 3, 1, 2)).float())


def test_in_memory_numpy_nchw_is_kept():
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    assert torch.equal(load_synthetic(x).images, torch.from_numpy(x))


def test_uint8_images_become_pixel_space():
    x = torch.tensor([0, 51, 255, 102], dtype=torch.uint8).reshape(1, 1, 2, 2)
    syn = load_synthetic(x)
    assert syn.space == "pixel"
    assert torch.equal(
        syn.images, torch.tensor([0, 51, 255, 102], dtype=torch.float32).reshape(1, 1, 2, 2) / 255
    )


def test_uint8_images_refuse_another_space():
    x = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(InputError, match=r"integer images are raw pixels, but --space zca was given"):
        load_synthetic(x, space="zca")


def test_explicit_space_is_kept():
    assert load_synthetic(images(), space="zca").space == "zca"


def test_unknown_space_is_refused():
    with pytest.raises(InputError, match="space must be one of pixel, normalized, zca"):
        load_synthetic(images(), space="whitened")


def test_pt_tensor_file(tmp_path):
    x = images()
    torch.save(x, tmp_path / "syn.pt")
    syn = load_synthetic(tmp_path / "syn.pt")
    assert (syn.format, syn.source) == ("pt", str(tmp_path / "syn.pt"))
    assert torch.equal(syn.images, x) and syn.labels is None


def test_pt_dict_file(tmp_path):
    x, y = images(6), torch.tensor([0, 0, 1, 1, 2, 2])
    torch.save({"images": x, "labels": y, "lr": 0.01}, tmp_path / "syn.pth")
    syn = load_synthetic(str(tmp_path / "syn.pth"))
    assert syn.format == "pt" and torch.equal(syn.images, x) and torch.equal(syn.labels, y)
    assert syn.lr == 0.01


def test_pt_dict_with_x_and_y_keys(tmp_path):
    x, y = images(4), torch.tensor([1, 0, 1, 0], dtype=torch.int32)
    torch.save({"x": x, "y": y}, tmp_path / "syn.pt")
    syn = load_synthetic(tmp_path / "syn.pt")
    assert syn.labels.dtype == torch.int64 and syn.labels.tolist() == [1, 0, 1, 0]


def test_pt_dict_without_images_is_refused(tmp_path):
    torch.save({"pixels": images(2)}, tmp_path / "syn.pt")
    with pytest.raises(InputError, match=r"keys \['pixels'\].*'images', 'data', 'x'"):
        load_synthetic(tmp_path / "syn.pt")


def test_separate_labels_from_tensor_pt_and_npy(tmp_path):
    x, y = images(4), torch.tensor([3, 2, 1, 0])
    torch.save(y, tmp_path / "labels.pt")
    np.save(tmp_path / "labels.npy", y.numpy())
    for labels in (y, y.numpy(), tmp_path / "labels.pt", str(tmp_path / "labels.npy")):
        assert load_synthetic(x, labels).labels.tolist() == [3, 2, 1, 0]


def test_separate_labels_override_stored_ones(tmp_path):
    torch.save({"images": images(2), "labels": torch.tensor([0, 0])}, tmp_path / "syn.pt")
    assert load_synthetic(tmp_path / "syn.pt", torch.tensor([1, 1])).labels.tolist() == [1, 1]


def test_datm_folder_with_soft_labels_and_lr(tmp_path):
    x = images(10)
    logits = torch.randn(10, 5, requires_grad=True)
    folder = tmp_path / "datm"
    folder.mkdir()
    torch.save(x.clone().requires_grad_(True), folder / "images_best.pt")
    torch.save(logits, folder / "labels_best.pt")
    torch.save(torch.tensor(0.0123, requires_grad=True), folder / "lr_best.pt")
    syn = load_synthetic(folder)
    assert (syn.format, syn.space, syn.source) == ("datm", None, str(folder))
    assert torch.equal(syn.images, x) and not syn.images.requires_grad
    assert syn.labels.dtype == torch.float32 and torch.equal(syn.labels, logits.detach())
    assert syn.lr == pytest.approx(0.0123)


def test_mtt_folder_with_hard_labels_and_float_lr(tmp_path):
    folder = tmp_path / "mtt"
    folder.mkdir()
    torch.save(images(6), folder / "images_best.pt")
    torch.save(torch.tensor([0, 0, 1, 1, 2, 2]), folder / "labels_best.pt")
    torch.save(0.02, folder / "lr_best.pt")
    syn = load_synthetic(folder)
    assert syn.format == "datm" and syn.labels.tolist() == [0, 0, 1, 1, 2, 2] and syn.lr == 0.02


def test_datm_folder_without_labels_or_lr(tmp_path):
    folder = tmp_path / "mtt"
    folder.mkdir()
    torch.save(images(6), folder / "images_best.pt")
    syn = load_synthetic(folder, lr=0.5)
    assert syn.labels is None and syn.lr == 0.5


def test_dc_result_file_takes_last_experiment(tmp_path):
    first, last = images(4), images(4)
    data = [[first, torch.tensor([0, 0, 1, 1])], [last, torch.tensor([0, 1, 0, 1])]]
    torch.save({"data": data, "accs_all_exps": {"ConvNet": [0.41, 0.42]}}, tmp_path / "res_DC_CIFAR10.pt")
    syn = load_synthetic(tmp_path / "res_DC_CIFAR10.pt")
    assert syn.format == "dc"
    assert torch.equal(syn.images, last) and syn.labels.tolist() == [0, 1, 0, 1]


def test_npz_nhwc_uint8(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "syn.npz", images=pixels, labels=np.array([0, 1, 2, 3]))
    syn = load_synthetic(tmp_path / "syn.npz")
    assert (syn.format, syn.space) == ("npz", "pixel") and syn.images.shape == (4, 3, 8, 8)
    assert torch.equal(syn.images, torch.from_numpy(pixels.transpose(0, 3, 1, 2)).float() / 255)
    assert syn.labels.tolist() == [0, 1, 2, 3]


def test_npz_nchw_float(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "syn.npz", images=x)
    syn = load_synthetic(tmp_path / "syn.npz")
    assert syn.space is None and syn.labels is None and torch.equal(syn.images, torch.from_numpy(x))


def test_npy_file_is_a_bare_tensor(tmp_path):
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "syn.npy", x)
    syn = load_synthetic(tmp_path / "syn.npy")
    assert syn.format == "tensor" and torch.equal(syn.images, torch.from_numpy(x))


def test_sre2l_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in range(3):
        for i in range(2):
            pixels[cls, i] = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            write_png(tmp_path / "syn" / f"new{cls:03d}" / f"class{cls:03d}_id{i:03d}.png", pixels[cls, i])
    syn = load_synthetic(tmp_path / "syn")
    assert (syn.format, syn.space) == ("imagefolder", "pixel")
    assert syn.images.shape == (6, 3, 6, 6) and syn.labels.tolist() == [0, 0, 1, 1, 2, 2]
    expected = torch.stack(
        [torch.from_numpy(pixels[c, i]).permute(2, 0, 1) for c in range(3) for i in range(2)]
    )
    assert torch.equal(syn.images, expected.float() / 255)


def test_rded_grayscale_class_folders(tmp_path):
    first = np.arange(16, dtype=np.uint8).reshape(4, 4)
    second = (255 - np.arange(16, dtype=np.uint8)).reshape(4, 4)
    write_png(tmp_path / "syn" / "00000" / "0.png", first)
    write_png(tmp_path / "syn" / "00001" / "0.png", second)
    (tmp_path / "syn" / "00001" / "notes.txt").write_text("not an image")
    syn = load_synthetic(tmp_path / "syn")
    assert syn.images.shape == (2, 1, 4, 4) and syn.labels.tolist() == [0, 1]
    assert torch.equal(syn.images[1, 0], torch.from_numpy(second).float() / 255)


def test_class_folder_index_is_the_trailing_number(tmp_path):
    for name in ("new000", "new007"):
        write_png(tmp_path / "syn" / name / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    assert load_synthetic(tmp_path / "syn").labels.tolist() == [0, 7]


def test_class_folders_without_numbers_use_sorted_position(tmp_path):
    for name in ("dog", "cat"):
        write_png(tmp_path / "syn" / name / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    assert load_synthetic(tmp_path / "syn", format="imagefolder").labels.tolist() == [0, 1]


def test_class_folders_with_the_same_number_are_refused(tmp_path):
    for name in ("cat1", "dog01"):
        write_png(tmp_path / "syn" / name / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="class folders 'cat1' and 'dog01' both end in class number 1"):
        load_synthetic(tmp_path / "syn")


def test_class_folders_with_mixed_sizes_name_the_file(tmp_path):
    write_png(tmp_path / "syn" / "new000" / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    write_png(tmp_path / "syn" / "new001" / "b.png", np.zeros((4, 5, 3), dtype=np.uint8))
    with pytest.raises(InputError, match=r"new001/b\.png is 5x4 but .*new000/a\.png is 4x4"):
        load_synthetic(tmp_path / "syn")


def test_forced_format_must_fit_the_path(tmp_path):
    torch.save(images(2), tmp_path / "syn.pt")
    with pytest.raises(InputError, match="format 'datm' reads a folder"):
        load_synthetic(tmp_path / "syn.pt", format="datm")
    with pytest.raises(InputError, match="in-memory tensor or array is format 'tensor'"):
        load_synthetic(images(2), format="npz")


def test_a_loaded_set_passes_through_with_overrides():
    syn = load_synthetic(images(4))
    again = load_synthetic(syn, torch.tensor([0, 1, 0, 1]), lr=0.1, space="normalized")
    assert torch.equal(again.images, syn.images) and again.labels.tolist() == [0, 1, 0, 1]
    assert (again.lr, again.space, again.format) == (0.1, "normalized", "tensor")


# ---- pickle safety -------------------------------------------------------------------------------


def test_file_needing_full_unpickling_is_refused_unless_allowed(tmp_path):
    x = images(2)
    torch.save({"images": x, "meta": RunMetadata("seed 0")}, tmp_path / "syn.pt")
    with pytest.raises(
        InputError, match=r"needs full unpickling.*arbitrary code.*--allow-pickle.*allow_pickle=True"
    ):
        load_synthetic(tmp_path / "syn.pt")
    assert torch.equal(load_synthetic(tmp_path / "syn.pt", allow_pickle=True).images, x)


def test_npz_with_object_arrays_is_refused_unless_allowed(tmp_path):
    x = np.zeros((2, 3, 4, 4), dtype=np.float32)
    np.savez(tmp_path / "syn.npz", images=x, labels=np.array([0, "cat"], dtype=object))
    with pytest.raises(
        InputError, match=r"needs full unpickling \(it holds object arrays\).*allow_pickle=True"
    ):
        load_synthetic(tmp_path / "syn.npz")
    with pytest.raises(InputError, match="labels have numpy dtype object"):
        load_synthetic(tmp_path / "syn.npz", allow_pickle=True)


def test_text_in_a_pt_file_is_reported_as_text(tmp_path):
    (tmp_path / "syn.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"syn\.pt is not a torch file \(looks like text\)"):
        load_synthetic(tmp_path / "syn.pt")


# ---- fingerprint ---------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_content_sensitive(tmp_path):
    x, y = images(4), torch.tensor([0, 1, 0, 1])
    torch.save({"images": x, "labels": y}, tmp_path / "syn.pt")
    reference = load_synthetic(x.clone(), y.clone()).fingerprint()
    assert len(reference) == 64
    assert load_synthetic(tmp_path / "syn.pt").fingerprint() == reference
    changed = x.clone()
    changed[0, 0, 0, 0] += 0.5
    assert load_synthetic(changed, y).fingerprint() != reference
    assert load_synthetic(x, torch.tensor([1, 1, 0, 0])).fingerprint() != reference
    assert load_synthetic(x, y, lr=0.01).fingerprint() != reference
    assert load_synthetic(x).fingerprint() != reference


# ---- validation: accepted sets -------------------------------------------------------------------


def test_validate_implied_labels_infers_ipc():
    valid = validate_synthetic(load_synthetic(images(20)), num_classes=10, channels=3, size=8)
    assert valid.ipc == 2 and valid.class_counts == [2] * 10 and valid.soft_labels is None
    assert valid.hard_labels.tolist() == [c for c in range(10) for _ in range(2)]


def test_validate_hard_labels():
    syn = load_synthetic(images(4), torch.tensor([1, 0, 1, 2]), lr=0.05)
    valid = validate_synthetic(syn, num_classes=3, channels=3, size=8)
    assert valid.class_counts == [1, 2, 1] and valid.ipc == 2 and valid.lr == 0.05
    assert valid.fingerprint == syn.fingerprint() and valid.format == "tensor"


def test_validate_soft_labels_take_classes_from_the_class_major_order():
    # learned logits need not peak at the image's class (the third image's do not)
    logits = torch.tensor([[5.0, 0.0], [3.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    valid = validate_synthetic(load_synthetic(images(4), logits), num_classes=2, channels=3, size=8, ipc=2)
    assert valid.hard_labels.tolist() == [0, 0, 1, 1] and torch.equal(valid.soft_labels, logits)


def test_validate_soft_labels_fall_back_to_argmax_without_a_class_major_order():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 0.0, 3.0], [0.0, 2.0, 0.0]])
    valid = validate_synthetic(load_synthetic(images(4), logits), num_classes=3, channels=3, size=8)
    assert valid.hard_labels.tolist() == [0, 1, 2, 1]


def test_validate_resizes_when_asked():
    x = images(10, size=12)
    valid = validate_synthetic(load_synthetic(x), num_classes=10, channels=3, size=8, resize=True)
    expected = F.interpolate(x, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    assert valid.images.shape == (10, 3, 8, 8) and torch.equal(valid.images, expected)


# ---- validation: bad input -----------------------------------------------------------------------


def test_wrong_rank_at_load():
    with pytest.raises(InputError, match=r"shape \[20, 8, 8\] \(3-D\); expected 4-D \[N, C, H, W\]"):
        load_synthetic(torch.rand(20, 8, 8))


def test_wrong_rank_at_validation():
    with pytest.raises(InputError, match=r"shape \[20, 192\] \(2-D\); expected 4-D \[N, C, H, W\]"):
        validate_synthetic(memory_set(torch.rand(20, 192)), num_classes=10, channels=3, size=8)


def test_channel_mismatch():
    with pytest.raises(InputError, match="images have 1 channels .* but the dataset has 3"):
        validate_synthetic(load_synthetic(images(10, c=1)), num_classes=10, channels=3, size=8)


def test_size_mismatch_names_the_resize_option():
    with pytest.raises(
        InputError,
        match=r"images are 12x12 but the protocol uses 8x8; pass --resize \(resize=True in Python\)",
    ):
        validate_synthetic(load_synthetic(images(10, size=12)), num_classes=10, channels=3, size=8)


def test_implied_labels_need_n_equal_classes_times_ipc():
    with pytest.raises(InputError, match=r"20 images but 10 classes x IPC 3 = 30"):
        validate_synthetic(load_synthetic(images(20)), num_classes=10, channels=3, size=8, ipc=3)


def test_implied_labels_need_n_divisible_by_classes():
    with pytest.raises(InputError, match="21 images cannot be split evenly over 10 classes"):
        validate_synthetic(load_synthetic(images(21)), num_classes=10, channels=3, size=8)


def test_hard_label_out_of_range_names_the_value():
    syn = load_synthetic(images(4), torch.tensor([0, 1, 7, 2]))
    with pytest.raises(InputError, match=r"label 7 at index 2 is outside \[0, 3\)"):
        validate_synthetic(syn, num_classes=3, channels=3, size=8)


def test_negative_hard_label():
    syn = load_synthetic(images(4), torch.tensor([0, -1, 1, 2]))
    with pytest.raises(InputError, match=r"label -1 at index 1 is outside \[0, 3\)"):
        validate_synthetic(syn, num_classes=3, channels=3, size=8)


def test_hard_label_count_differs_from_images():
    syn = load_synthetic(images(4), torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="3 hard labels for 4 images"):
        validate_synthetic(syn, num_classes=3, channels=3, size=8)


def test_soft_label_rows_differ_from_images():
    syn = load_synthetic(images(4), torch.randn(5, 3))
    with pytest.raises(InputError, match=r"soft labels have shape \[5, 3\] but there are 4 images"):
        validate_synthetic(syn, num_classes=3, channels=3, size=8)


def test_soft_label_width_differs_from_classes():
    syn = load_synthetic(images(4), torch.randn(4, 5))
    with pytest.raises(InputError, match="soft labels have 5 columns but the dataset has 3 classes"):
        validate_synthetic(syn, num_classes=3, channels=3, size=8)


def test_labels_of_wrong_dtype():
    with pytest.raises(InputError, match="labels have dtype torch.bool; expected integer class indices"):
        load_synthetic(images(4), torch.tensor([True, False, True, False]))


def test_labels_of_wrong_rank():
    with pytest.raises(InputError, match=r"integer labels have shape \[4, 1\]; expected class indices \[N\]"):
        load_synthetic(images(4), torch.zeros(4, 1, dtype=torch.int64))
    with pytest.raises(
        InputError, match=r"float labels have shape \[4, 3, 1\]; expected soft labels \[N, K\]"
    ):
        validate_synthetic(memory_set(images(4), torch.zeros(4, 3, 1)), num_classes=3, channels=3, size=8)


def test_nan_and_inf_in_images_are_counted():
    x = images(10)
    x[0, 0, 0, 0], x[1, 0, 0, 0], x[2, 0, 0, 0] = math.nan, math.nan, math.inf
    with pytest.raises(InputError, match="images hold 2 NaN and 1 Inf values"):
        validate_synthetic(load_synthetic(x), num_classes=10, channels=3, size=8)


def test_inf_in_soft_labels_is_counted():
    logits = torch.randn(4, 2)
    logits[3, 1] = -math.inf
    with pytest.raises(InputError, match="soft labels hold 0 NaN and 1 Inf values"):
        validate_synthetic(load_synthetic(images(4), logits), num_classes=2, channels=3, size=8)


def test_empty_class_is_named():
    syn = load_synthetic(images(4), torch.tensor([0, 0, 2, 2]))
    with pytest.raises(InputError, match=r"class 1 has no image \(1 of 3 classes are empty\)"):
        validate_synthetic(syn, num_classes=3, channels=3, size=8)


def test_empty_set():
    with pytest.raises(InputError, match="is empty: it holds 0 images"):
        validate_synthetic(load_synthetic(torch.zeros(0, 3, 8, 8)), num_classes=10, channels=3, size=8)


@pytest.mark.parametrize("lr", [0.0, -0.01, math.nan, math.inf])
def test_bad_lr_at_load(lr):
    with pytest.raises(InputError, match="lr must be a positive finite number"):
        load_synthetic(images(10), lr=lr)


def test_bad_shipped_lr_in_datm_folder(tmp_path):
    torch.save(images(4), tmp_path / "images_best.pt")
    torch.save(torch.tensor(-0.5), tmp_path / "lr_best.pt")
    with pytest.raises(InputError, match=r"lr must be a positive finite number; got -0\.5"):
        load_synthetic(tmp_path)


def test_bad_lr_at_validation():
    with pytest.raises(InputError, match="lr must be a positive finite number"):
        validate_synthetic(memory_set(images(10), lr=0.0), num_classes=10, channels=3, size=8)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="synthetic set .*nowhere.pt does not exist"):
        load_synthetic(tmp_path / "nowhere.pt")


def test_directory_with_no_known_layout_lists_what_was_looked_for(tmp_path):
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(
        InputError, match=r"matches no known synthetic-set layout: looked for images_best\.pt .*\.png"
    ):
        load_synthetic(tmp_path)


def test_npz_without_images(tmp_path):
    np.savez(tmp_path / "syn.npz", pixels=np.zeros((2, 3, 4, 4)))
    with pytest.raises(InputError, match=r"has no 'images' array \(arrays: pixels\)"):
        load_synthetic(tmp_path / "syn.npz")


def test_dc_result_file_without_data(tmp_path):
    torch.save({"accs_all_exps": {"ConvNet": [0.4]}}, tmp_path / "res.pt")
    with pytest.raises(InputError, match="not a DC/DSA/DM result file: it has no 'data' entry"):
        load_synthetic(tmp_path / "res.pt")
    with pytest.raises(InputError, match="no 'data' entry"):
        load_synthetic(tmp_path / "res.pt", format="dc")


def test_unknown_format_name():
    with pytest.raises(UnknownNameError, match="unknown format 'npzz'; did you mean 'npz'"):
        load_synthetic(images(4), format="npzz")


def test_unknown_file_suffix(tmp_path):
    (tmp_path / "syn.bin").write_bytes(b"\0")
    with pytest.raises(InputError, match="cannot tell the format of .*syn.bin from its suffix"):
        load_synthetic(tmp_path / "syn.bin")


def test_explicit_ipc_disagrees_with_class_counts():
    syn = load_synthetic(images(6), torch.tensor([0, 0, 1, 1, 2, 2]))
    with pytest.raises(InputError, match="ipc=3 was given but the labels hold 2 images per class"):
        validate_synthetic(syn, num_classes=3, channels=3, size=8, ipc=3)


def test_integer_images_outside_pixel_range():
    with pytest.raises(InputError, match=r"integer images must hold pixel values in 0\.\.255; got 0\.\.300"):
        load_synthetic(torch.tensor([0, 300]).reshape(1, 1, 1, 2))


# ---- untrusted files: classified and size-checked before loading ---------------------------------


def _one_line_naming(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_plain_pickle_calling_os_functions_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "syn.pt"
    path.write_bytes(pickle.dumps({"images": MakesDirectory(marker)}, protocol=protocol))
    with pytest.raises(InputError) as refused:
        load_synthetic(path)
    message = _one_line_naming(refused, path)
    assert "needs full unpickling (it is a plain Python pickle" in message
    assert (
        "references posix.mkdir" in message
        and "--allow-pickle (allow_pickle=True in Python) only for files you trust" in message
    )
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_a_torch_file_with_an_arbitrary_global_is_refused_naming_it(tmp_path, legacy):
    marker = tmp_path / "ran"
    path = tmp_path / "syn.pt"
    torch.save(
        {"images": images(2), "hook": MakesDirectory(marker)}, path, _use_new_zipfile_serialization=not legacy
    )
    with pytest.raises(InputError) as refused:
        load_synthetic(path)
    message = _one_line_naming(refused, path)
    assert "needs full unpickling (it references posix.mkdir)" in message and "--allow-pickle" in message
    assert "pytorch.org" not in message and not marker.exists()


def test_a_trusted_plain_pickle_loads_with_allow_pickle(tmp_path):
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    (tmp_path / "syn.pkl").write_bytes(pickle.dumps({"images": x, "labels": np.array([0, 1, 2, 3])}))
    with pytest.raises(InputError, match="needs full unpickling"):
        load_synthetic(tmp_path / "syn.pkl")
    syn = load_synthetic(tmp_path / "syn.pkl", allow_pickle=True)
    assert syn.format == "pt" and torch.equal(syn.images, torch.from_numpy(x))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", r"is not a torch file: it is empty \(0 bytes\)"),
        (b"images: [1, 2]\nlabels: [0, 1]\n", r"is not a torch file \(looks like text\)"),
        (bytes(range(256)) * 8, r"is not a torch file \(binary data of no known format\)"),
    ],
)
def test_files_that_are_not_torch_files_say_what_they_are(tmp_path, content, expected):
    (tmp_path / "syn.pt").write_bytes(content)
    with pytest.raises(InputError, match=expected) as refused:
        load_synthetic(tmp_path / "syn.pt")
    _one_line_naming(refused, tmp_path / "syn.pt")


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".npy"])
def test_a_truncated_file_says_truncated(tmp_path, suffix):
    path = tmp_path / f"syn{suffix}"
    if suffix == ".pt":
        torch.save({"images": images(4)}, path)
    elif suffix == ".npz":
        np.savez(path, images=images(4).numpy())
    else:
        np.save(path, images(4).numpy())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match=r"is truncated: .*; copy or write it again") as refused:
        load_synthetic(path)
    _one_line_naming(refused, path)


def test_an_npz_claiming_64e12_elements_is_refused_at_once(tmp_path):
    with zipfile.ZipFile(tmp_path / "syn.npz", "w") as archive:
        archive.writestr("images.npy", npy_bytes((64_000_000, 1_000_000), data=b"\0" * 64))
    with pytest.raises(InputError, match=r"is truncated: .*\[64000000, 1000000\] float32 \(232\.8 TiB\)"):
        load_synthetic(tmp_path / "syn.npz")


def test_a_zip_bomb_npz_is_refused_in_well_under_a_second(tmp_path):
    zip_bomb(tmp_path / "syn.npz", 1100)  # about 1.1 MB inflating to 1.1 GiB: over the default limit
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"declares 1\.1 GiB of data .* more than the limit of 1\.0 GiB"):
        load_synthetic(tmp_path / "syn.npz")
    assert time.perf_counter() - started < 1.0


def test_the_size_limit_is_named_and_overridable(tmp_path):
    x = images(16)
    for name, save in (("syn.pt", lambda p: torch.save(x, p)), ("syn.npy", lambda p: np.save(p, x.numpy()))):
        save(tmp_path / name)
        with pytest.raises(
            InputError,
            match=r"more than the limit of 1\.0 KiB; pass a larger --max-input-size \(max_bytes= in Python\)",
        ):
            load_synthetic(tmp_path / name, max_bytes=1024)
        assert torch.equal(load_synthetic(tmp_path / name, max_bytes=1 << 20).images, x)
    with pytest.raises(InputError, match="max_bytes must be a positive number"):
        load_synthetic(x, max_bytes=0)


def test_the_format_comes_from_the_content_not_the_suffix(tmp_path):
    x = images(2)
    torch.save({"images": x}, tmp_path / "syn.bin")
    with open(tmp_path / "arrays.data", "wb") as handle:
        np.savez(handle, images=x.numpy())
    assert load_synthetic(tmp_path / "syn.bin").format == "pt"
    assert load_synthetic(tmp_path / "arrays.data").format == "npz"


def test_a_folder_of_datm_files_is_checked_file_by_file(tmp_path):
    torch.save(images(4), tmp_path / "images_best.pt")
    (tmp_path / "labels_best.pt").write_text("0 1 2 3")
    with pytest.raises(InputError, match=r"labels_best\.pt is not a torch file \(looks like text\)"):
        load_synthetic(tmp_path)


def test_a_huge_image_is_refused_from_its_header(tmp_path):
    write_png(tmp_path / "syn" / "new000" / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    huge = tmp_path / "syn" / "new001" / "b.png"
    huge.parent.mkdir()
    huge.write_bytes(png_header(20_000, 20_000))
    started = time.perf_counter()
    with pytest.raises(
        InputError, match=r"image .*b\.png is larger than PIL decodes safely \(.*400000000 pixels"
    ):
        load_synthetic(tmp_path / "syn")
    assert time.perf_counter() - started < 1.0
    huge.write_bytes(png_header(8_000, 8_000))
    with pytest.raises(
        InputError, match=r"b\.png is 8000x8000 \(183\.1 MiB decoded\), more than the limit of 100\.0"
    ):
        load_synthetic(tmp_path / "syn", max_bytes=100 << 20)


def test_a_damaged_image_names_the_file(tmp_path):
    write_png(tmp_path / "syn" / "new000" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    damaged = tmp_path / "syn" / "new000" / "a.png"
    damaged.write_bytes(damaged.read_bytes()[:-30])
    with pytest.raises(InputError, match=r"cannot read image .*a\.png") as refused:
        load_synthetic(tmp_path / "syn")
    _one_line_naming(refused, damaged)


def test_a_path_with_control_characters_stays_one_line(tmp_path):
    path = tmp_path / "evil\nname\x1b[31m.pt"
    path.write_text("text")
    with pytest.raises(InputError) as refused:
        load_synthetic(path)
    message = str(refused.value)
    assert "\n" not in message and "\x1b" not in message and "evil\\nname\\x1b[31m.pt" in message


@pytest.mark.parametrize(
    ("dtype", "accepted"),
    [(">f4", True), ("<f2", True), ("<u2", True), (np.longdouble, True), ("?", False), ("<c8", False)],
)
def test_numpy_dtypes_are_converted_or_refused(tmp_path, dtype, accepted):
    x = (np.random.default_rng(0).random((2, 3, 4, 4)) * (200 if np.dtype(dtype).kind == "u" else 1)).astype(
        dtype
    )
    np.save(tmp_path / "syn.npy", x)
    if accepted:
        assert load_synthetic(tmp_path / "syn.npy").images.shape == (2, 3, 4, 4)
    else:
        with pytest.raises(InputError, match="images have"):
            load_synthetic(tmp_path / "syn.npy")


# ---- values that contradict the declared space ---------------------------------------------------


def _validate(x, space, **extra):
    return validate_synthetic(
        load_synthetic(x), num_classes=2, channels=3, size=8, default_space=space, **extra
    )


@pytest.mark.parametrize("space", ["normalized", "pixel"])
def test_floats_in_0_to_255_warn_naming_the_fix(space):
    x = torch.rand(4, 3, 8, 8) * 255
    (warning,) = _validate(x, space).warnings
    assert isinstance(warning, ValueWarning) and warning.flag == "--space pixel"
    assert (
        "look like 0..255 pixels stored as floats" in warning.message and "--space pixel" in warning.message
    )
    with pytest.raises(InputError, match=r"0\.\.255 pixels .*refused by --strict, strict=True in Python"):
        _validate(x, space, strict=True)


def test_uint8_images_holding_only_0_and_1_warn():
    x = (torch.rand(4, 3, 8, 8) > 0.5).to(torch.uint8)
    (warning,) = _validate(x, None).warnings
    assert "hold only 0 and 1" in warning.message and warning.flag == "--space pixel"


def test_absurd_magnitudes_warn_in_every_space():
    x = torch.randn(4, 3, 8, 8)
    x[0, 0, 0, 0] = 1e30
    for space in ("normalized", "zca", "pixel"):
        (warning,) = _validate(x, space).warnings
        assert "far outside any image space" in warning.message and "1e+30" in warning.message


def test_pixels_declared_normalized_and_normalized_declared_pixels_warn():
    (warning,) = _validate(torch.rand(8, 3, 8, 8), "normalized").warnings
    assert "none negative" in warning.message and warning.flag == "--space pixel"
    (warning,) = _validate(torch.randn(4, 3, 8, 8) * 2, "pixel").warnings
    assert "--space normalized" in warning.message


def test_plausible_values_give_no_warning():
    assert _validate(torch.randn(4, 3, 8, 8), "normalized").warnings == ()
    assert _validate(torch.randn(4, 3, 8, 8) * 5, "zca").warnings == ()
    assert _validate(torch.rand(4, 3, 8, 8), "pixel").warnings == ()
    assert _validate(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), None).warnings == ()
    assert (
        _validate(torch.rand(4, 3, 8, 8) * 255, None).warnings == ()
    )  # no space known: nothing to contradict
    assert _validate(torch.rand(4, 3, 8, 8) * 255, None, strict=True).warnings == ()


def test_the_set_space_wins_over_the_default():
    syn = load_synthetic(torch.rand(4, 3, 8, 8), space="pixel")
    valid = validate_synthetic(syn, num_classes=2, channels=3, size=8, default_space="normalized")
    assert valid.warnings == ()


def test_soft_labels_under_a_hard_label_protocol_warn():
    valid = validate_synthetic(
        load_synthetic(images(4), torch.randn(4, 2)), num_classes=2, channels=3, size=8
    )
    (warning,) = protocol_warnings(valid, label_mode="hard", protocol="dm")
    assert "soft labels [N, 2] are ignored because protocol 'dm' trains on hard labels" in warning.message
    assert protocol_warnings(valid, label_mode="S", protocol="datm") == []


def _grey_folder(root, n_per_class: int = 2):
    for cls in range(2):
        (root / f"c{cls}").mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(np.full((4, 4), 50 * cls + 10 * i, np.uint8)).save(root / f"c{cls}" / f"{i}.png")


def test_sixteen_bit_grey_images_are_rescaled_not_clipped(tmp_path):
    _grey_folder(tmp_path / "syn")
    deep = np.array([[0, 257, 65535, 32768]] * 4, np.uint16)  # 0, 1, 255, 127.5 in 8 bits
    Image.fromarray(deep).save(tmp_path / "syn" / "c1" / "2.png")
    syn = load_synthetic(tmp_path / "syn")
    assert syn.images.shape == (5, 1, 4, 4)  # still one grey channel
    assert (syn.images[-1, 0, 0] * 255).round().tolist() == [0, 1, 255, 128]


def test_a_colour_image_in_a_grey_folder_is_named_as_the_cause(tmp_path):
    _grey_folder(tmp_path / "syn")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), mode="RGBA").save(tmp_path / "syn" / "c1" / "2.png")
    syn = load_synthetic(tmp_path / "syn")
    with pytest.raises(InputError, match=r"has 1; a class-folder set is read in colour when any of its"):
        validate_synthetic(syn, num_classes=2, channels=1, size=4, ipc=None)


def test_sparse_images_or_labels_are_named_as_such():
    images = torch.randn(4, 1, 4, 4)
    with pytest.raises(InputError, match="images are a sparse_coo tensor; expected a dense float or uint8"):
        load_synthetic(images.to_sparse())
    with pytest.raises(InputError, match="labels are not a dense tensor"):
        load_synthetic(images, torch.eye(4)[:, :2].to_sparse())

"""Batched torchvision-style transforms: crop boxes, flip, PatchShuffle, Compose and the spec parser."""

import math
from collections import Counter

import pytest
import torch
import torchvision
from scipy import stats

from ddrank import rng
from ddrank.augment.transforms import (
    Compose,
    PatchShuffle,
    RandomHorizontalFlip,
    RandomResizedCrop,
    transforms_from_spec,
)
from ddrank.errors import ConfigError, InputError, UnknownNameError


def member_keys(k: int, seed: int = 0) -> torch.Tensor:
    return rng.key_from_seed([seed * 1000 + i for i in range(k)])


def coordinates(k: int, b: int, h: int, w: int) -> torch.Tensor:
    """Images whose two channels hold each pixel's column and row index."""
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([cols, rows]).expand(k, b, 2, h, w).contiguous()


def recovered_boxes(out: torch.Tensor) -> torch.Tensor:
    """(top, left, height, width) of each crop, read from a resampled coordinate image.

    Output column q samples input column left + (q + 0.5) w / S - 0.5; the middle half of the
    output is clear of the border clamping, so a straight line through it gives left and w.
    """
    sides = []
    for channel, axis in ((1, -2), (0, -1)):
        size = out.shape[axis]
        line = out[:, :, channel].mean(-1 if axis == -2 else -2)  # [K, B, size]
        q = torch.arange(size, dtype=torch.float64) + 0.5
        middle = slice(size // 4, size - size // 4)
        slope = (line[..., middle.stop - 1].double() - line[..., middle.start].double()) / (
            q[middle.stop - 1] - q[middle.start]
        )
        start = line[..., middle.start].double() - slope * q[middle.start] + 0.5
        sides.append((start, slope * size))
    (top, h), (left, w) = sides
    return torch.stack([top, left, h, w], dim=-1)


@pytest.mark.parametrize(("scale", "ratio"), [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.5, 1.0), (0.5, 2.0))])
def test_crop_boxes_respect_the_scale_and_ratio_ranges(scale, ratio):
    K, B, H, W, S = 3, 200, 40, 48, 24
    crop = RandomResizedCrop(S, scale=scale, ratio=ratio)
    key = member_keys(K)
    out = crop(coordinates(K, B, H, W), key)
    assert out.shape == (K, B, 2, S, S)
    found = recovered_boxes(out)
    assert (found - found.round()).abs().max() < 1e-3  # integer boxes, as torchvision's
    boxes = crop.boxes(key, B, H, W)
    assert torch.equal(found.round().long(), boxes)
    top, left, h, w = boxes.double().unbind(-1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all()
    # Sides are rounded from a box with area in scale·H·W and aspect ratio in ratio.
    assert ((w - 0.5) * (h - 0.5) <= scale[1] * H * W).all() and (
        (w + 0.5) * (h + 0.5) >= scale[0] * H * W
    ).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1]).all() and ((w + 0.5) / (h - 0.5) >= ratio[0]).all()
    area = h * w / (H * W)
    assert area.min() < scale[0] + 0.1 and area.max() > 0.9


def test_crop_boxes_are_distributed_like_torchvision():
    H, W, n = 64, 48, 3000
    ours = RandomResizedCrop().boxes(member_keys(1, seed=3), n, H, W)[0].double()
    torch.manual_seed(0)
    image = torch.zeros(1, H, W)
    theirs = torch.tensor(
        [
            torchvision.transforms.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
            for _ in range(n)
        ],
        dtype=torch.float64,
    )
    for a, b in ((ours, theirs), (ours[:, 2:], theirs[:, 2:])):
        area, theirs_area = a[:, -1] * a[:, -2], b[:, -1] * b[:, -2]
        assert stats.ks_2samp(area.numpy(), theirs_area.numpy()).pvalue > 1e-3
        log_ratio, theirs_ratio = (a[:, -1] / a[:, -2]).log(), (b[:, -1] / b[:, -2]).log()
        assert stats.ks_2samp(log_ratio.numpy(), theirs_ratio.numpy()).pvalue > 1e-3
    assert stats.ks_2samp(ours[:, 0].numpy(), theirs[:, 0].numpy()).pvalue > 1e-3  # top


@pytest.mark.parametrize(("H", "W", "size"), [(32, 32, 32), (64, 48, 64), (40, 40, 24)])
def test_crops_equal_torchvisions_resized_crop_of_the_same_box(H, W, size):
    """Pixel for pixel, edges included: torchvision crops and then interpolates, so nothing outside the
    box reaches the output (bilinear, no antialiasing, as ddrank resizes)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resized_crop

    K, B = 2, 12
    crop = RandomResizedCrop(size)
    key = member_keys(K, seed=5)
    x = torch.rand(K, B, 3, H, W, generator=torch.Generator().manual_seed(1))
    out = crop(x, key)
    for k, b in zip(range(K), range(B), strict=False):
        for member, sample in ((k, b), (k, B - 1 - b)):
            top, left, h, w = crop.boxes(key, B, H, W)[member, sample].tolist()
            expected = resized_crop(
                x[member, sample], top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=False
            )
            torch.testing.assert_close(out[member, sample], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("H", "W", "expected"), [(32, 32, (0, 0, 32, 32)), (16, 32, (0, 5, 16, 21)), (32, 16, (5, 0, 21, 16))]
)
def test_crop_falls_back_to_torchvisions_centre_crop(H, W, expected):
    crop = RandomResizedCrop(scale=(2.0, 3.0))  # no attempt can fit inside the image
    boxes = crop.boxes(member_keys(2), 5, H, W)
    assert torch.equal(boxes, torch.tensor(expected).expand(2, 5, 4))
    image = torch.zeros(1, H, W)
    torch.manual_seed(0)
    assert torchvision.transforms.RandomResizedCrop.get_params(image, [2.0, 3.0], [3 / 4, 4 / 3]) == expected


@pytest.mark.parametrize(("H", "W"), [(32, 32), (24, 24), (12, 18)])
def test_the_identity_box_gives_the_input_back(H, W):
    x = torch.randn(2, 6, 3, H, W)
    crop = RandomResizedCrop(scale=(1.0, 1.0), ratio=(W / H, W / H))
    out = crop(x, member_keys(2))
    if H == W == 32:
        assert torch.equal(out, x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_crop_resizes_to_the_requested_size_and_keeps_dtype():
    x, key = torch.rand(2, 4, 3, 32, 32), member_keys(2)
    assert RandomResizedCrop((20, 24))(x, key).shape == (2, 4, 3, 20, 24)
    low = RandomResizedCrop(16)(x.bfloat16(), key)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), RandomResizedCrop(16)(x, key), atol=0.02, rtol=0.02)
    x.requires_grad_(True)
    RandomResizedCrop(16)(x, key).sum().backward()
    assert x.grad.abs().sum() > 0


def test_flip_mirrors_exactly_about_half_the_samples():
    x = torch.randn(2, 500, 3, 8, 8)
    y = RandomHorizontalFlip()(x, member_keys(2))
    flipped = (y == x.flip(-1)).flatten(2).all(-1)
    unchanged = (y == x).flatten(2).all(-1)
    assert (flipped ^ unchanged).all()
    assert 0.42 < flipped.float().mean() < 0.58
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x, member_keys(2)), x)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x, member_keys(2)), x.flip(-1))


def grid_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """The grid x grid patches of each sample, ``[K, B, grid * grid, C * step * step]`` in row-major order."""
    K, B, C, H, W = x.shape
    step = H // grid
    cells = x[..., : grid * step, : grid * step].reshape(K, B, C, grid, step, grid, step)
    return cells.permute(0, 1, 3, 5, 2, 4, 6).reshape(K, B, grid * grid, -1)


@pytest.mark.parametrize(("grid", "size"), [(2, 32), (4, 32), (4, 10), (3, 12)])
def test_patch_shuffle_permutes_row_and_column_strips(grid, size):
    K, B = 2, 64
    x = torch.randn(K, B, 3, size, size)
    y = PatchShuffle(grid)(x, member_keys(K))
    step = size // grid
    used = step * grid
    match = (grid_patches(y, grid)[:, :, :, None] == grid_patches(x, grid)[:, :, None, :]).all(-1)
    ones = torch.ones(K, B, grid * grid, dtype=torch.int64)
    assert torch.equal(match.sum(-1), ones) and torch.equal(match.sum(-2), ones)  # a permutation of patches
    source = match.int().argmax(-1).view(K, B, grid, grid)  # input patch of each output patch
    source_row, source_col = source // grid, source % grid
    # As in the reference: output patch (r, c) is input patch (σ(r), τ(c)), one σ and τ per sample.
    assert torch.equal(source_row, source_row[..., :1].expand_as(source_row))
    assert torch.equal(source_col, source_col[..., :1, :].expand_as(source_col))
    # Pixels past the last whole strip stay in their row (column); the strips cross them as well.
    strip_rows = torch.cat(
        [
            (source_row[..., 0, None] * step + torch.arange(step)).flatten(-2),
            torch.arange(used, size).expand(K, B, -1),
        ],
        -1,
    )
    strip_cols = torch.cat(
        [
            (source_col[..., 0, :, None] * step + torch.arange(step)).flatten(-2),
            torch.arange(used, size).expand(K, B, -1),
        ],
        -1,
    )
    expected = x.take_along_dim(strip_rows[:, :, None, :, None], 3).take_along_dim(
        strip_cols[:, :, None, None, :], 4
    )
    assert torch.equal(y, expected)
    orders = {
        tuple(order)
        for order in torch.cat([source_row[..., 0], source_col[..., 0, :]]).flatten(0, 1).tolist()
    }
    assert len(orders) == math.factorial(grid)  # every permutation occurs across samples


def test_compose_gives_each_step_its_own_sub_key():
    x, key = torch.randn(3, 200, 3, 8, 8), member_keys(3)
    twice = Compose([RandomHorizontalFlip(), RandomHorizontalFlip()])(x, key)
    once = (twice == x.flip(-1)).flatten(2).all(-1)
    assert 0.35 < once.float().mean() < 0.65  # independent flips: about half end up mirrored
    pipeline = Compose([RandomResizedCrop(16, scale=(0.5, 1.0)), RandomHorizontalFlip(), PatchShuffle(2)])
    assert pipeline(x[..., :8, :8].repeat(1, 1, 1, 2, 2), key).shape == (3, 200, 3, 16, 16)


def full_pipeline() -> Compose:
    return Compose([RandomResizedCrop(24, scale=(0.08, 1.0)), RandomHorizontalFlip(), PatchShuffle(4)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_member_is_bit_identical_alone_and_in_the_ensemble(dtype):
    x, key = torch.randn(4, 9, 3, 32, 28).to(dtype), member_keys(4, seed=7)
    for transform in (RandomResizedCrop(16), RandomHorizontalFlip(), PatchShuffle(3), full_pipeline()):
        together = transform(x, key)
        assert together.dtype == dtype
        for k in range(4):
            assert torch.equal(together[k], transform(x[k : k + 1], key[k : k + 1])[0])


def test_same_key_same_output_other_key_other_output():
    x = torch.randn(2, 16, 3, 32, 32)
    pipeline = full_pipeline()
    assert torch.equal(pipeline(x, member_keys(2)), pipeline(x, member_keys(2)))
    assert not torch.equal(pipeline(x, member_keys(2)), pipeline(x, member_keys(2, seed=1)))


def test_a_batch_of_256_is_transformed_without_a_python_loop_over_samples(count_ops):
    pipeline, key = full_pipeline(), member_keys(2)
    counts = []
    for batch in (16, 256):
        images = torch.randn(2, batch, 3, 32, 32)
        counts.append(count_ops(lambda x=images: pipeline(x, key)))
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) < 1200


def test_transforms_from_spec_builds_the_pipeline():
    assert transforms_from_spec(None) is None and transforms_from_spec([]) is None
    pipeline = transforms_from_spec(
        [
            {"name": "random_resized_crop", "scale": [0.5, 1.0]},
            {"name": "flip"},
            {"name": "patch_shuffle", "grid": 2},
        ]
    )
    crop, flip, shuffle = pipeline.transforms
    assert isinstance(crop, RandomResizedCrop) and crop.scale == (0.5, 1.0) and crop.size is None
    assert isinstance(flip, RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(shuffle, PatchShuffle) and shuffle.grid == 2
    x, key = torch.randn(2, 4, 3, 16, 16), member_keys(2)
    assert torch.equal(pipeline(x, key), Compose([crop, flip, shuffle])(x, key))
    assert transforms_from_spec([{"name": "RRC", "size": [8, 12]}]).transforms[0].size == (8, 12)


def test_transforms_from_spec_refuses_bad_names_and_parameters():
    with pytest.raises(
        UnknownNameError, match="unknown transform 'random_resize_crop'.*'random_resized_crop'"
    ):
        transforms_from_spec([{"name": "random_resize_crop"}])
    with pytest.raises(ConfigError, match="'flip' has no parameter 'prob'; it takes p"):
        transforms_from_spec([{"name": "flip", "prob": 0.3}])
    with pytest.raises(ConfigError, match="scale must be a range"):
        transforms_from_spec([{"name": "random_resized_crop", "scale": [1.0, 0.5]}])
    with pytest.raises(ConfigError, match="ratio must be a range"):
        transforms_from_spec([{"name": "random_resized_crop", "ratio": 2}])
    with pytest.raises(ConfigError, match="size must be a positive integer"):
        transforms_from_spec([{"name": "random_resized_crop", "size": "large"}])
    with pytest.raises(ConfigError, match="grid must be a positive integer"):
        transforms_from_spec([{"name": "patch_shuffle", "grid": 0}])
    with pytest.raises(ConfigError, match=r"flip probability p must lie in \[0, 1\]"):
        transforms_from_spec([{"name": "flip", "p": 2}])
    with pytest.raises(ConfigError, match="step 1 must be a mapping with a 'name'"):
        transforms_from_spec([{"name": "flip"}, "crop"])


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match=r"\[K, B, C, H, W\]"):
        RandomHorizontalFlip()(torch.randn(8, 3, 32, 32), member_keys(8))
    with pytest.raises(InputError, match="key"):
        RandomResizedCrop()(torch.randn(2, 8, 3, 32, 32), member_keys(3))
    with pytest.raises(InputError, match="at least 4 pixels"):
        PatchShuffle(4)(torch.randn(1, 2, 3, 3, 8), member_keys(1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_keeps_members_independent():
    x, key = torch.randn(5, 64, 3, 32, 32), member_keys(5)
    pipeline = full_pipeline()
    on_gpu = pipeline(x.cuda(), key.cuda())
    assert torch.equal(
        RandomResizedCrop().boxes(key.cuda(), 64, 32, 32).cpu(), RandomResizedCrop().boxes(key, 64, 32, 32)
    )
    torch.testing.assert_close(on_gpu.cpu(), pipeline(x, key), atol=1e-4, rtol=1e-4)
    for k in range(5):
        assert torch.equal(on_gpu[k], pipeline(x[k : k + 1].cuda(), key[k : k + 1].cuda())[0])


def test_random_crop_is_a_window_of_the_padded_image_at_a_uniform_offset():
    from ddrank.augment.transforms import RandomCrop

    x = coordinates(2, 3000, 8, 8) + 1.0  # channel 0: column + 1, channel 1: row + 1 (never the fill)
    out = RandomCrop(padding=2, fill=[0.0, -1.0])(x, member_keys(2))
    assert out.shape == x.shape
    for k in range(2):
        for b in range(40):
            cols, rows = out[k, b, 0], out[k, b, 1]
            inside = cols != 0
            # every kept pixel moved by one common offset in [-2, 2] per axis
            dx = {int(v) for v in (cols[inside] - (torch.arange(8) + 1.0).expand(8, 8)[inside])}
            dy = {int(v) for v in (rows[inside] - (torch.arange(8) + 1.0)[:, None].expand(8, 8)[inside])}
            assert len(dx) == len(dy) == 1 and abs(dx.pop()) <= 2 and abs(dy.pop()) <= 2
            assert torch.all(rows[~inside] == -1.0)  # the per-channel fill where the padding shows
    # torchvision draws the top-left corner uniformly from the 5 x 5 positions
    top_left = out[:, :, 0, 4, 4] - 5.0, out[:, :, 1, 4, 4] - 5.0
    pairs = Counter(zip(top_left[0].flatten().tolist(), top_left[1].flatten().tolist(), strict=True))
    assert len(pairs) == 25
    assert stats.chisquare(list(pairs.values())).pvalue > 1e-3


def test_random_crop_to_a_smaller_size_and_its_errors():
    from ddrank.augment.transforms import RandomCrop

    x = torch.randn(1, 4, 3, 10, 10)
    assert RandomCrop(size=8)(x, member_keys(1)).shape == (1, 4, 3, 8, 8)
    with pytest.raises(InputError, match="does not fit"):
        RandomCrop(size=16, padding=2)(x, member_keys(1))
    with pytest.raises(InputError, match="fill has 2 values for 3-channel images"):
        RandomCrop(padding=1, fill=[0.0, 1.0])(x, member_keys(1))
    with pytest.raises(ConfigError, match="padding must be an integer"):
        transforms_from_spec([{"name": "random_crop", "padding": 1.5}])
    with pytest.raises(ConfigError, match="fill must be a finite number"):
        transforms_from_spec([{"name": "random_crop", "fill": [float("nan")]}])


def test_gaussian_noise_adds_the_asked_normal_noise():
    from ddrank.augment.transforms import GaussianNoise

    x = torch.zeros(2, 16, 3, 16, 16)
    noise = GaussianNoise(mean=0.2, sigma=0.1, clip=False)(x, member_keys(2))
    assert noise.mean().item() == pytest.approx(0.2, abs=2e-3)
    assert noise.std().item() == pytest.approx(0.1, rel=0.02)
    assert stats.normaltest(noise[0].flatten()[:5000].numpy()).pvalue > 1e-4
    clipped = GaussianNoise(sigma=1.0)(x + 0.5, member_keys(2))
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0


@pytest.mark.parametrize("name", ["random_crop", "gaussian_noise"])
def test_new_transforms_keep_members_independent_and_batch_free(name, count_ops):
    step = {"random_crop": {"name": "random_crop", "padding": 4}, "gaussian_noise": {"name": name}}[name]
    pipeline = transforms_from_spec([step])
    x, key = torch.randn(4, 9, 3, 16, 16), member_keys(4, seed=3)
    together = pipeline(x, key)
    for k in range(4):
        assert torch.equal(together[k], pipeline(x[k : k + 1], key[k : k + 1])[0])
    counts = []
    for batch in (16, 128):
        counts.append(count_ops(lambda b=batch: pipeline(torch.randn(2, b, 3, 12, 12), member_keys(2))))
    assert counts[0] == counts[1]

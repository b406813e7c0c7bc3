"""Batched DSA: each family's semantics, modes S and M, member independence, batching, gradients."""

import pytest
import torch

from ddrank import rng
from ddrank.augment import DSA, FAMILIES, DSAParams, dsa_from_spec
from ddrank.augment import dsa as dsa_module
from ddrank.errors import ConfigError, InputError, UnknownNameError


def member_keys(k: int, seed: int = 0) -> torch.Tensor:
    return rng.key_from_seed([seed * 1000 + i for i in range(k)])


def coordinate_image(k: int, b: int, size: int = 33) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two channels holding the normalised x and y coordinates, and the coordinate grids."""
    coords = torch.linspace(-1.0, 1.0, size)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs, ys]).expand(k, b, 2, size, size).contiguous(), xs, ys


def fit(target: torch.Tensor, *basis: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients ``[N, len(basis)]`` of ``target [N, P]`` on basis images ``[P]``."""
    design = torch.stack([b.reshape(-1) for b in basis], dim=1).double()
    return torch.linalg.lstsq(design, target.double().T).solution.T


def test_flip_mirrors_exactly_about_half_the_samples():
    x = torch.randn(2, 500, 3, 8, 8)
    y = DSA("flip", mode="M")(x, member_keys(2))
    flipped = (y == x.flip(-1)).flatten(2).all(-1)
    unchanged = (y == x).flatten(2).all(-1)
    assert (flipped ^ unchanged).all()
    assert 0.42 < flipped.float().mean().item() < 0.58


def test_crop_is_an_exact_integer_translation_with_zero_fill():
    H, W = 32, 24
    x = torch.arange(1, H * W + 1, dtype=torch.float32).view(H, W).expand(2, 300, 1, H, W)
    y = DSA("crop", mode="M")(x, member_keys(2))
    centre = y[..., 0, H // 2, W // 2].long() - 1  # a shift of at most 4 keeps the centre inside
    dy, dx = centre // W - H // 2, centre % W - W // 2
    assert dy.abs().max() == 4 and dx.abs().max() == 3  # round(0.125 * side) per axis
    assert {dy.min().item(), dy.max().item(), dx.min().item(), dx.max().item()} == {-4, 4, -3, 3}
    rows = torch.arange(H)[:, None] + dy[..., None, None]
    cols = torch.arange(W)[None, :] + dx[..., None, None]
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    expected = torch.where(inside, rows * W + cols + 1, 0).float()
    assert torch.equal(y[:, :, 0], expected)


@pytest.mark.parametrize(("size", "side"), [((32, 32), (16, 16)), ((9, 12), (5, 6))])
def test_cutout_zeroes_one_square_clamped_to_the_image(size, side):
    H, W = size
    y = DSA("cutout", mode="M")(torch.ones(2, 400, 3, H, W), member_keys(2))
    assert torch.equal(y, y[:, :, :1].expand_as(y))  # the same hole in every channel
    zero = y[:, :, 0] == 0
    rows, cols = zero.any(-1), zero.any(-2)
    height, width = rows.sum(-1), cols.sum(-1)
    assert torch.equal(zero.sum((-2, -1)), height * width)  # a filled rectangle
    first_row, last_row = rows.float().argmax(-1), H - 1 - rows.flip(-1).float().argmax(-1)
    first_col, last_col = cols.float().argmax(-1), W - 1 - cols.flip(-1).float().argmax(-1)
    assert torch.equal(last_row - first_row + 1, height) and torch.equal(last_col - first_col + 1, width)
    assert (height <= side[0]).all() and (width <= side[1]).all()
    interior = (first_row > 0) & (last_row < H - 1) & (first_col > 0) & (last_col < W - 1)
    assert (height[interior] == side[0]).all() and (width[interior] == side[1]).all()
    full = (height == side[0]) & (width == side[1])
    assert 0.15 < full.float().mean() < 0.6 and (~full).any()  # reference centres: some clamped


def test_color_is_brightness_then_saturation_then_contrast():
    x = torch.rand(2, 200, 3, 8, 8)
    y = DSA("color", mode="M")(x, member_keys(2)).flatten(0, 1).double()
    x = x.flatten(0, 1).double()
    brightness = (y.mean((1, 2, 3)) - x.mean((1, 2, 3))).float()  # saturation, contrast keep the mean
    assert brightness.abs().max() <= 0.5 and brightness.min() < -0.4 and brightness.max() > 0.4
    pixel_mean, sample_mean = x.mean(1, keepdim=True), x.mean((1, 2, 3), keepdim=True)
    out_pixel_mean, out_sample_mean = y.mean(1, keepdim=True), y.mean((1, 2, 3), keepdim=True)
    across = (pixel_mean - sample_mean).flatten(1)
    contrast = ((out_pixel_mean - out_sample_mean).flatten(1) * across).sum(1) / (across**2).sum(1)
    chroma = (x - pixel_mean).flatten(1)
    saturation = ((y - out_pixel_mean).flatten(1) * chroma).sum(1) / (chroma**2).sum(1) / contrast
    assert contrast.min() >= 0.5 - 1e-5 and contrast.max() <= 1.5 + 1e-5
    assert saturation.min() >= -1e-5 and saturation.max() <= 2 + 1e-5
    assert contrast.max() - contrast.min() > 0.8 and saturation.max() - saturation.min() > 1.6
    view = (-1, 1, 1, 1)
    model = (
        contrast.view(view) * saturation.view(view) * (x - pixel_mean)
        + contrast.view(view) * (pixel_mean - sample_mean)
        + sample_mean
        + brightness.double().view(view)
    )
    torch.testing.assert_close(y, model, atol=1e-5, rtol=0)


def test_scale_stretches_each_axis_within_the_ratio():
    x, xs, ys = coordinate_image(2, 200)
    y = DSA("scale", mode="M")(x, member_keys(2)).flatten(0, 1)
    centre = (xs.abs() <= 0.8) & (ys.abs() <= 0.8)
    sx = fit(y[:, 0][:, centre], xs[centre], ys[centre])
    sy = fit(y[:, 1][:, centre], ys[centre], xs[centre])
    torch.testing.assert_close(sx[:, 1], torch.zeros(400, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(sy[:, 1], torch.zeros(400, dtype=torch.float64), atol=1e-5, rtol=0)
    factors = torch.cat([sx[:, 0], sy[:, 0]])
    assert factors.min() >= 1 / 1.2 - 1e-5 and factors.max() <= 1.2 + 1e-5
    assert factors.min() < 0.86 and factors.max() > 1.17
    assert not torch.allclose(sx[:, 0], sy[:, 0])  # independent factors per axis


def test_rotate_turns_by_at_most_fifteen_degrees():
    x, xs, ys = coordinate_image(2, 200)
    y = DSA("rotate", mode="M")(x, member_keys(2)).flatten(0, 1)
    centre = xs**2 + ys**2 <= 0.9
    first = fit(y[:, 0][:, centre], xs[centre], ys[centre])  # cos t * x - sin t * y
    second = fit(y[:, 1][:, centre], xs[centre], ys[centre])  # sin t * x + cos t * y
    torch.testing.assert_close(second, torch.stack([-first[:, 1], first[:, 0]], 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(400, dtype=torch.float64), atol=1e-5, rtol=0)
    degrees = torch.rad2deg(torch.atan2(-first[:, 1], first[:, 0]))
    assert degrees.abs().max() <= 15 + 1e-3
    assert degrees.min() < -13 and degrees.max() > 13


@pytest.mark.parametrize("strategy", ["scale", "rotate", "scale_rotate"])
def test_warps_keep_the_centre_of_a_smooth_image(strategy):
    _, xs, ys = coordinate_image(1, 1)
    image = torch.exp(-(xs**2 + ys**2)) + 0.3 * torch.sin(2 * xs) * ys
    x = image.expand(2, 64, 3, 33, 33)
    y = DSA(strategy, mode="M")(x, member_keys(2))
    torch.testing.assert_close(y[..., 16, 16], x[..., 16, 16], atol=1e-5, rtol=0)
    assert (y - x).abs().amax() > 0.05


def test_scale_then_rotate_share_one_resampling_in_mode_m():
    x, xs, ys = coordinate_image(2, 50)
    key = member_keys(2)
    merged = DSA("scale_rotate", mode="M")(x, key)
    one_after_other = DSA("rotate", mode="M")(DSA("scale", mode="M")(x, key), key)
    centre = (xs.abs() <= 0.6) & (ys.abs() <= 0.6)
    torch.testing.assert_close(merged[..., centre], one_after_other[..., centre], atol=1e-5, rtol=0)
    assert (merged - one_after_other).abs().amax() > 1e-3  # two resamplings lose more at the border


def test_mode_s_applies_exactly_one_family_per_member():
    x, key = torch.randn(60, 6, 3, 8, 8), member_keys(60)
    y = DSA(mode="S")(x, key)
    # A family's draws depend only on the member key, so the chosen one reproduces y exactly.
    matches = torch.stack([(DSA(f, mode="M")(x, key) == y).flatten(1).all(1) for f in FAMILIES], 1)
    assert torch.equal(matches.sum(1), torch.ones(60, dtype=torch.int64))
    assert matches.any(0).all()  # every family is chosen by some member


def test_mode_m_applies_every_family_in_order():
    x, key = torch.randn(3, 8, 3, 16, 16), member_keys(3)
    y = DSA(mode="M")(x, key)
    expected = x
    for family in ("color", "crop", "cutout", "flip", "scale_rotate"):
        expected = DSA(family, mode="M")(expected, key)
    assert torch.equal(y, expected)


@pytest.mark.parametrize("mode", ["S", "M"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 3, 9, 11), (4, 1, 8, 8), (17, 3, 32, 32)])
def test_each_member_is_bit_identical_alone_and_in_the_ensemble(mode, dtype, shape):
    x, key = torch.randn(4, *shape).to(dtype), member_keys(4, seed=7)
    dsa = DSA("color_crop_cutout_flip_scale_rotate", mode=mode)
    together = dsa(x, key)
    assert together.shape == x.shape and together.dtype == dtype
    for k in range(4):
        assert torch.equal(together[k], dsa(x[k : k + 1], key[k : k + 1])[0])


@pytest.mark.parametrize(
    "strategy", ["color_crop_cutout_flip_scale_rotate", "color_crop_cutout_scale_rotate", "rotate_color"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mode_s_by_subsets_of_members_equals_the_whole_batch_route(strategy, dtype, monkeypatch):
    """On a CPU each kind of family runs on the members that picked it; the device route computes
    every kind for all members and selects. Both give the same bits, gradients included."""
    x = torch.randn(24, 5, 3, 9, 11).to(dtype).requires_grad_()
    key, dsa, weight = member_keys(24, seed=3), DSA(strategy, mode="S"), torch.randn(24, 5, 3, 9, 11)
    by_subsets = dsa(x, key)
    (subset_grad,) = torch.autograd.grad((by_subsets.float() * weight).sum(), x)
    monkeypatch.setattr(dsa_module, "_by_subsets", lambda images: False)
    whole = dsa(x, key)
    (whole_grad,) = torch.autograd.grad((whole.float() * weight).sum(), x)
    assert torch.equal(by_subsets, whole) and torch.equal(subset_grad, whole_grad)
    assert not torch.equal(by_subsets, x)


@pytest.mark.parametrize("mode", ["S", "M"])
def test_same_key_same_output_other_key_other_output(mode):
    x = torch.randn(2, 16, 3, 32, 32)
    dsa = DSA(mode=mode)
    assert torch.equal(dsa(x, member_keys(2)), dsa(x, member_keys(2)))
    assert not torch.equal(dsa(x, member_keys(2)), dsa(x, member_keys(2, seed=1)))


@pytest.mark.parametrize("mode", ["S", "M"])
def test_a_batch_of_256_is_augmented_without_a_python_loop_over_samples(mode, count_ops):
    dsa, key = DSA(mode=mode), member_keys(2)
    counts = []
    for batch in (16, 256):
        images = torch.randn(2, batch, 3, 32, 32)
        counts.append(count_ops(lambda x=images: dsa(x, key)))
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) < 600


def test_gradients_flow_to_the_images():
    key = member_keys(2)
    for mode in ("S", "M"):
        x = torch.randn(2, 2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, m=mode: DSA(mode=m)(t, key), (x,))
    x = torch.randn(2, 8, 3, 32, 32, requires_grad=True)
    DSA(mode="M")(x, key).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bfloat16_follows_the_float32_result():
    x, key = torch.rand(2, 16, 3, 32, 32), member_keys(2)
    exact = DSA("crop_cutout_flip", mode="M")
    assert torch.equal(exact(x.bfloat16(), key), exact(x.bfloat16().float(), key).bfloat16())
    dsa = DSA(mode="M")
    torch.testing.assert_close(dsa(x.bfloat16(), key).float(), dsa(x, key), atol=0.05, rtol=0.02)


def test_params_change_the_strength():
    x, key = torch.randn(2, 64, 3, 16, 16), member_keys(2)
    assert torch.equal(DSA("flip", mode="M", params=DSAParams(flip=0.0))(x, key), x)
    assert torch.equal(DSA("flip", mode="M", params=DSAParams(flip=1.0))(x, key), x.flip(-1))
    assert torch.equal(DSA("crop", mode="M", params=DSAParams(crop=0.0))(x, key), x)
    assert torch.equal(DSA("cutout", mode="M", params=DSAParams(cutout=0.0))(x, key), x)
    with pytest.raises(ConfigError, match="flip"):
        DSAParams(flip=1.5)
    with pytest.raises(ConfigError, match="scale"):
        DSAParams(scale=0.5)


def test_bad_names_modes_and_inputs_are_refused():
    with pytest.raises(UnknownNameError, match="augmentation family 'rotation'.*'rotate'"):
        DSA("color_rotation")
    with pytest.raises(ConfigError, match="mode"):
        DSA(mode="X")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="empty"):
        DSA("")
    dsa = DSA()
    with pytest.raises(InputError, match=r"\[K, B, C, H, W\]"):
        dsa(torch.randn(8, 3, 32, 32), member_keys(8))
    with pytest.raises(InputError, match="key"):
        dsa(torch.randn(2, 8, 3, 32, 32), member_keys(3))


def test_dsa_from_spec():
    assert dsa_from_spec(None) is None and dsa_from_spec("none") is None and dsa_from_spec("None") is None
    dsa = dsa_from_spec("color_crop_cutout_flip_scale_rotate", mode="M")
    assert dsa is not None and dsa.families == FAMILIES and dsa.mode == "M"
    assert dsa_from_spec("Flip_Crop").families == ("flip", "crop")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["S", "M"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu_and_keeps_members_independent(mode, dtype):
    x, key = torch.randn(5, 64, 3, 32, 32).to(dtype), member_keys(5)
    dsa = DSA(mode=mode)
    on_gpu = dsa(x.cuda(), key.cuda())
    assert on_gpu.dtype == dtype and on_gpu.is_cuda
    tolerance = 1e-4 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(on_gpu.cpu().float(), dsa(x, key).float(), atol=tolerance, rtol=tolerance)
    for k in range(5):
        alone = dsa(x[k : k + 1].cuda(), key[k : k + 1].cuda())[0]
        assert torch.equal(on_gpu[k], alone)

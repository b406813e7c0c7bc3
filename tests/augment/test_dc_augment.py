"""DC's MNIST augmentation, batched: each op against a per-image rendering of DC's semantics, the
draws' statistics, determinism, member independence and a Python-free batch."""

from collections import Counter

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ddrank import rng
from ddrank.augment import TRANSFORMS, DCAugment, transforms_from_spec
from ddrank.errors import ConfigError, InputError, UnknownNameError


def member_keys(k: int, seed: int = 0) -> torch.Tensor:
    return rng.key_from_seed([seed * 1000 + i for i in range(k)])


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def reference(images: torch.Tensor, params: dict, aug: DCAugment, order: int = 1) -> torch.Tensor:
    """DC's ``utils.augment`` applied image by image with the given draws (one member's batch [B, C, H, W]).

    The batch's channel means are taken before any image changes, as DC does. Rotation uses spline
    ``order`` (DC: scipy's default 3; ddrank resamples bilinearly, i.e. order 1).
    """
    images = images.clone().double()
    B, C, H, W = images.shape
    mean = [float(images[:, c].mean()) for c in range(C)]
    for i in range(B):
        op = aug.ops[int(params["op"][i])]
        if op == "crop":
            pad = aug.crop
            canvas = torch.empty(C, H + 2 * pad, W + 2 * pad, dtype=torch.float64)
            for c in range(C):
                canvas[c] = mean[c]
            canvas[:, pad : pad + H, pad : pad + W] = images[i]
            r, c = int(params["crop_row"][i]), int(params["crop_col"][i])
            images[i] = canvas[:, r : r + H, c : c + W]
        elif op == "scale":
            h, w = int(params["height"][i]), int(params["width"][i])
            resized = F.interpolate(images[i : i + 1].float(), [h, w])[0].double()
            side = max(h, w, H, W)
            canvas = torch.zeros(C, side, side, dtype=torch.float64)
            r, c = int((side - h) / 2), int((side - w) / 2)
            canvas[:, r : r + h, c : c + w] = resized
            r, c = int((side - H) / 2), int((side - W) / 2)
            images[i] = canvas[:, r : r + H, c : c + W]
        elif op == "rotate":
            turned = scipy.ndimage.rotate(
                images[i].numpy(),
                angle=int(params["angle"][i]),
                axes=(-2, -1),
                cval=np.mean(mean),
                order=order,
            )
            r, c = int((turned.shape[-2] - H) / 2), int((turned.shape[-1] - W) / 2)
            images[i] = torch.from_numpy(turned[:, r : r + H, c : c + W])
    return images


def draws(aug: DCAugment, key: torch.Tensor, shape) -> dict:
    return aug.params(key, shape[1], shape[3], shape[4])


@pytest.mark.parametrize("op", ["crop", "scale", "rotate"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 9)])
def test_each_op_matches_dcs_semantics_image_by_image(op, channels, size):
    torch.manual_seed(1)
    x = torch.randn(2, 64, channels, size, size)
    key = member_keys(2)
    aug = DCAugment(op)
    y = aug(x, key)
    p = draws(aug, key, x.shape)
    for k in range(2):
        expected = reference(x[k], {name: v[k] for name, v in p.items()}, aug)
        atol = 1e-5 if op != "rotate" else 1e-4
        torch.testing.assert_close(y[k].double(), expected, atol=atol, rtol=0)


def test_rotation_differs_from_dcs_cubic_spline_only_by_interpolation():
    coords = torch.arange(32, dtype=torch.float32)
    phase = torch.rand(48, 1, 1, 1) * 6.3
    smooth = (torch.sin(coords / 3 + phase) * torch.cos(coords / 4)[:, None])[None]
    aug = DCAugment("rotate")
    y = aug(smooth, member_keys(1))
    p = {name: v[0] for name, v in draws(aug, member_keys(1), smooth.shape).items()}
    cubic = reference(smooth[0], p, aug, order=3)
    interior = (slice(None), slice(None), slice(6, 26), slice(6, 26))
    difference = (y[0].double() - cubic)[interior].abs()
    assert difference.max() < 0.05 and difference.mean() < 0.01  # on images of amplitude 1


def test_draws_follow_dcs_distributions():
    aug = DCAugment("crop_scale_rotate_noise")
    p = aug.params(member_keys(4), 5000, 28, 28)
    counts = torch.bincount(p["op"].flatten(), minlength=4).double() / p["op"].numel()
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.double), atol=0.01)
    for name in ("crop_row", "crop_col"):
        assert set(p[name].unique().tolist()) == set(range(8))  # DC: np.random.permutation(2 * crop)[0]
    assert set(p["angle"].unique().tolist()) == set(range(-45, 45))  # DC: np.random.randint(-45, 45)
    assert p["angle"].double().mean().abs() < 1.5
    for name in ("height", "width"):  # DC: int(uniform(0.8, 1.2) * 28)
        assert set(p[name].unique().tolist()) == set(range(22, 34))
        assert abs(p[name].double().mean().item() - 27.5) < 0.2


def test_noise_adds_gaussian_noise_of_the_given_strength():
    x = torch.zeros(2, 400, 1, 16, 16)
    y = DCAugment("noise", noise=0.5)(x, member_keys(2))
    assert abs(y.mean().item()) < 0.01 and abs(y.std().item() - 0.5) < 0.01
    skew = ((y / 0.5) ** 3).mean().item()
    kurtosis = ((y / 0.5) ** 4).mean().item()
    assert abs(skew) < 0.05 and abs(kurtosis - 3.0) < 0.1
    assert torch.equal(DCAugment("noise", noise=0.0)(x, member_keys(2)), x)


def test_crop_shifts_by_at_most_crop_pixels_and_fills_with_the_batch_mean():
    H = W = 20
    x = torch.arange(1, H * W + 1, dtype=torch.float32).view(H, W).expand(1, 300, 1, H, W).contiguous()
    y = DCAugment("crop")(x, member_keys(1))
    centre = y[0, :, 0, H // 2, W // 2].long() - 1
    dy, dx = centre // W - H // 2, centre % W - W // 2
    assert set(dy.tolist()) == set(range(-4, 4)) and set(dx.tolist()) == set(range(-4, 4))
    batch_mean = x.mean()
    border = y[0, :, 0][(dy < 0)[:, None, None].expand(-1, H, W) & (torch.arange(H) == 0)[None, :, None]]
    torch.testing.assert_close(border, torch.full_like(border, batch_mean.item()))


def test_scale_zooms_in_and_out_with_a_zero_border():
    x = torch.ones(1, 400, 1, 28, 28)
    aug = DCAugment("scale")
    y = aug(x, member_keys(1))
    p = draws(aug, member_keys(1), x.shape)
    coverage = y[0, :, 0].sum((-1, -2))  # how much of the 28x28 window the resized image covers
    expected = p["height"][0].clamp(max=28) * p["width"][0].clamp(max=28)
    assert torch.equal(coverage, expected.float())
    assert (coverage < 28 * 28).any() and (coverage == 28 * 28).any()


def test_every_sample_gets_exactly_one_op():
    torch.manual_seed(3)
    x, key = torch.randn(3, 40, 1, 28, 28), member_keys(3)
    aug = DCAugment()
    y = aug(x, key)
    singles = torch.stack([(DCAugment(op)(x, key) == y).flatten(2).all(-1) for op in aug.ops], -1)
    p = draws(aug, key, x.shape)
    chosen = singles.gather(-1, p["op"][..., None])[..., 0]
    assert (
        chosen.all()
    )  # the drawn op reproduces the sample exactly (draws do not depend on the strategy's ops)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_member_is_bit_identical_alone_and_in_the_ensemble(dtype):
    x, key = torch.randn(4, 17, 1, 28, 28).to(dtype), member_keys(4, seed=5)
    aug = DCAugment("crop_scale_rotate_noise")
    together = aug(x, key)
    assert together.shape == x.shape and together.dtype == dtype
    for k in range(4):
        assert torch.equal(together[k], aug(x[k : k + 1], key[k : k + 1])[0])


def test_a_samples_draws_do_not_depend_on_the_batch_size():
    torch.manual_seed(4)
    first = torch.randn(2, 8, 1, 28, 28)
    batch = torch.cat([first, first.flip(-1)], dim=1)  # same channel means as ``first`` alone
    aug, key = DCAugment("crop_scale_rotate_noise"), member_keys(2)
    small, large = aug.params(key, 8, 28, 28), aug.params(key, 16, 28, 28)
    assert all(torch.equal(small[name], large[name][:, :8]) for name in small)
    torch.testing.assert_close(aug(batch, key)[:, :8], aug(first, key), atol=1e-6, rtol=0)


def test_same_key_same_output_other_key_other_output():
    x = torch.randn(2, 16, 1, 28, 28)
    aug = DCAugment()
    assert torch.equal(aug(x, member_keys(2)), aug(x, member_keys(2)))
    assert not torch.equal(aug(x, member_keys(2)), aug(x, member_keys(2, seed=1)))


def test_a_batch_of_256_is_augmented_without_a_python_loop_over_samples():
    aug, key = DCAugment("crop_scale_rotate_noise"), member_keys(2)
    counts = []
    for batch in (16, 256):
        with OpCounter() as counter:
            aug(torch.randn(2, batch, 1, 28, 28), key)
        counts.append(counter.counts)
    assert counts[0] == counts[1]
    assert sum(counts[0].values()) < 800


def test_it_is_a_named_transform_with_dcs_defaults():
    assert TRANSFORMS.canonical("dc_aug") == "dc_augment"
    pipeline = transforms_from_spec([{"name": "dc_augment", "strategy": "crop_noise"}])
    (aug,) = pipeline.transforms
    assert (aug.ops, aug.crop, aug.scale, aug.rotate, aug.noise) == (("crop", "noise"), 4, 0.2, 45, 0.001)
    assert DCAugment().ops == ("crop", "scale", "rotate")
    x = torch.randn(1, 4, 1, 28, 28)
    assert pipeline(x, member_keys(1)).shape == x.shape


def test_bad_strategies_parameters_and_inputs_are_refused():
    with pytest.raises(UnknownNameError, match="unknown DC augmentation op 'rotation'.*'rotate'"):
        DCAugment("crop_rotation")
    with pytest.raises(ConfigError, match="empty DC augmentation strategy"):
        DCAugment("")
    with pytest.raises(ConfigError, match="crop must be a positive integer, got 0"):
        DCAugment(crop=0)
    with pytest.raises(ConfigError, match=r"scale must lie in \[0, 1\)"):
        DCAugment(scale=1.5)
    with pytest.raises(ConfigError, match="has no parameter 'angle'"):
        transforms_from_spec([{"name": "dc_augment", "angle": 30}])
    aug = DCAugment()
    with pytest.raises(InputError, match=r"\[K, B, C, H, W\]"):
        aug(torch.randn(4, 1, 28, 28), member_keys(4))
    with pytest.raises(InputError, match="one int64 key per member"):
        aug(torch.randn(2, 4, 1, 28, 28), member_keys(3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_keeps_members_independent():
    x, key = torch.randn(5, 64, 1, 28, 28), member_keys(5)
    aug = DCAugment("crop_scale_rotate_noise")
    on_gpu = aug(x.cuda(), key.cuda())
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), aug(x, key), atol=1e-4, rtol=1e-4)
    for k in range(5):
        assert torch.equal(on_gpu[k], aug(x[k : k + 1].cuda(), key[k : k + 1].cuda())[0])

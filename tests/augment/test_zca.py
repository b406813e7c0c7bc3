"""ZCA whitening: kornia's semantics, whitened covariance, exact inversion, fingerprint."""

import pytest
import torch

from ddrank.augment.zca import ZCA
from ddrank.errors import InputError


def correlated_images(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    """Images with strong correlation between neighbouring pixels and channels, like photographs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size, size, generator=g)
    x = 0.2 * x + torch.nn.functional.avg_pool2d(x, 5, 1, 2) * 5 + x.mean(1, keepdim=True)
    return (x - x.mean()) / x.std()


def covariance(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1).double()
    centred = flat - flat.mean(0)
    return centred.T @ centred / (flat.shape[0] - 1)


def test_matches_kornia_on_its_documented_example():
    # kornia.enhance.zca_whiten([[0, 1], [1, 0], [-1, 0]]) with eps 1e-6, unbiased covariance.
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]).view(3, 2, 1, 1)
    whitened = ZCA.fit(x, regularization=1e-6).apply(x).view(3, 2)
    expected = torch.tensor([[0.0, 1.1547], [1.0, -0.5773], [-1.0, -0.5773]])
    torch.testing.assert_close(whitened, expected, atol=2e-4, rtol=0)


@pytest.mark.parametrize("regularization", [0.1, 1.0])
def test_whitened_covariance_is_shrunk_as_the_regularisation_implies(regularization):
    x = correlated_images(2000, 3, 4)
    zca = ZCA.fit(x, regularization)
    sigma = covariance(x)
    expected = sigma @ torch.linalg.inv(sigma + regularization * torch.eye(48, dtype=torch.float64))
    torch.testing.assert_close(covariance(zca.apply(x.double())), expected, atol=1e-8, rtol=0)
    assert zca.apply(x).mean(0).abs().max() < 1e-5


def test_whitening_is_exactly_the_identity_covariance_without_regularisation():
    x = correlated_images(3000, 1, 8).double()
    zca = ZCA.fit(x, regularization=0.0)
    torch.testing.assert_close(
        covariance(zca.apply(x)), torch.eye(64, dtype=torch.float64), atol=1e-9, rtol=0
    )
    torch.testing.assert_close(zca.transform, zca.transform.T, atol=1e-12, rtol=0)  # ZCA, not PCA: symmetric
    torch.testing.assert_close(
        zca.transform @ zca.inverse, torch.eye(64, dtype=torch.float64), atol=1e-9, rtol=0
    )


def test_fewer_images_than_features_give_the_same_matrices():
    x = correlated_images(20, 1, 8).double()  # N = 20 < D = 64: decomposed through the Gram matrix
    zca = ZCA.fit(x, regularization=0.1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance(x))
    scale = eigenvalues.clamp(min=0) + 0.1
    torch.testing.assert_close(
        zca.transform, (eigenvectors * scale.rsqrt()) @ eigenvectors.T, atol=1e-9, rtol=0
    )
    torch.testing.assert_close(zca.inverse, (eigenvectors * scale.sqrt()) @ eigenvectors.T, atol=1e-9, rtol=0)
    torch.testing.assert_close(zca.mean, x.flatten(1).mean(0), atol=1e-12, rtol=0)


def test_invert_undoes_apply_and_leading_dims_are_kept():
    x = correlated_images(500, 1, 8)
    zca = ZCA.fit(x)
    held_out = correlated_images(40, 1, 8, seed=1).view(4, 10, 1, 8, 8)
    whitened = zca.apply(held_out)
    assert whitened.shape == held_out.shape and whitened.dtype == torch.float32
    assert torch.equal(whitened.view(40, 1, 8, 8), zca.apply(held_out.view(40, 1, 8, 8)))
    torch.testing.assert_close(zca.invert(whitened), held_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(zca.invert(zca.apply(x[0])), x[0], atol=1e-5, rtol=0)


def test_fingerprint_is_deterministic_and_tracks_the_fit():
    x = correlated_images(300, 1, 8)
    first, again = ZCA.fit(x), ZCA.fit(x.clone())
    assert first.fingerprint == again.fingerprint and len(first.fingerprint) == 16
    assert torch.equal(first.transform, again.transform)
    assert ZCA.fit(x, regularization=0.2).fingerprint != first.fingerprint
    assert ZCA.fit(x[1:]).fingerprint != first.fingerprint
    assert first.to("cpu").fingerprint == first.fingerprint


def test_fits_and_inverts_cifar_shaped_images():
    x = correlated_images(128, 3, 32)
    zca = ZCA.fit(x, regularization=0.1)
    assert zca.mean.shape == (3072,) and zca.transform.shape == zca.inverse.shape == (3072, 3072)
    assert zca.transform.dtype == torch.float64
    whitened = zca.apply(x[:64])
    assert whitened.shape == (64, 3, 32, 32)
    torch.testing.assert_close(zca.invert(whitened), x[:64], atol=1e-5, rtol=0)
    # The whitened covariance is sigma (sigma + eps I)^-1, checked on a few random directions.
    sigma, probe = covariance(x), torch.randn(3072, 4, dtype=torch.float64)
    whitened_sigma = covariance(zca.apply(x.double()))
    torch.testing.assert_close(
        whitened_sigma @ (sigma @ probe + 0.1 * probe), sigma @ probe, atol=1e-7, rtol=1e-7
    )


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match=r"\[N, C, H, W\]"):
        ZCA.fit(torch.zeros(10, 64))
    with pytest.raises(InputError, match="at least 2"):
        ZCA.fit(torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match="non-negative"):
        ZCA.fit(torch.rand(10, 1, 2, 2), regularization=-1.0)
    with pytest.raises(InputError, match=r"fewer images \(3\) than features per image \(16\)"):
        ZCA.fit(torch.rand(3, 1, 4, 4), regularization=0.0)
    constant_pixel = torch.rand(40, 1, 4, 4)
    constant_pixel[:, :, 0, 0] = 1.0
    with pytest.raises(InputError, match="singular"):
        ZCA.fit(constant_pixel, regularization=0.0)
    zca = ZCA.fit(correlated_images(50, 1, 4))
    with pytest.raises(InputError, match="16 features"):
        zca.apply(torch.zeros(5, 3, 4, 4))

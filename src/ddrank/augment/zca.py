"""ZCA whitening, fitted as MTT / DATM fit it with ``kornia.enhance.ZCAWhitening(eps=0.1)``.

kornia flattens each image to D = C·H·W features, centres on the per-feature mean, takes the
*unbiased* covariance ``Xcᵀ Xc / (N − 1)`` (its default, which MTT keeps), and decomposes it as
``U diag(S) Uᵀ``. The whitening matrix is ``W = U diag(1 / sqrt(S + eps)) Uᵀ`` and the inverse is
``U diag(sqrt(S + eps)) Uᵀ``; whitening maps ``x ↦ (x − mean) W`` and inverting maps
``z ↦ z W⁻¹ + mean``. Both matrices are symmetric. The whitened training data has covariance
``U diag(S / (S + eps)) Uᵀ``: the identity on directions of large variance, shrunk where the
variance is comparable to eps. Everything is fitted in float64; kornia uses an SVD of the
covariance, which for a symmetric positive semi-definite matrix gives the same factors as the
eigendecomposition used here. With fewer images than features the same matrices are built from
the N×N Gram matrix, which is far cheaper than decomposing the D×D covariance.

MTT and DATM fit on ``ToTensor()`` images in [0, 1] (they switch the mean/std normalisation off
when ZCA is on); whatever space the images are fitted in, apply and invert in that same space.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from ddrank.errors import InputError

# Rows whitened per matrix product, to bound the float64 working memory of large sets.
_CHUNK = 8192


@dataclass(frozen=True)
class ZCA:
    """A fitted ZCA whitening: per-feature mean, whitening matrix and its inverse (float64)."""

    mean: Tensor  # [D]
    transform: Tensor  # [D, D]
    inverse: Tensor  # [D, D]
    regularization: float
    fingerprint: str  # hash of the fitted matrices and the regularisation

    @classmethod
    def fit(cls, images: Tensor, regularization: float = 0.1) -> ZCA:
        """Fit on float images ``[N, C, H, W]`` (N ≥ 2), on their device.

        ``regularization`` is kornia's eps, added to every eigenvalue of the covariance.
        """
        if images.dim() != 4 or not images.is_floating_point():
            raise InputError(
                f"ZCA is fitted on float images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if images.shape[0] < 2:
            raise InputError(f"ZCA needs at least 2 images to estimate a covariance, got {images.shape[0]}")
        if not regularization >= 0:
            raise InputError(f"ZCA regularization must be non-negative, got {regularization}")
        flat = images.flatten(1)
        n, d = flat.shape
        mean = sum(chunk.double().sum(0) for chunk in flat.split(_CHUNK)) / n
        if n - 1 >= d:
            transform, inverse = _from_covariance(flat, mean, regularization)
        else:
            transform, inverse = _from_gram(flat.double() - mean, regularization)
        return cls(
            mean,
            transform,
            inverse,
            float(regularization),
            _fingerprint(mean, transform, inverse, regularization),
        )

    @property
    def features(self) -> int:
        return self.mean.shape[0]

    def to(self, device: torch.device | str) -> ZCA:
        """The same fit with its matrices on ``device``."""
        return ZCA(
            self.mean.to(device),
            self.transform.to(device),
            self.inverse.to(device),
            self.regularization,
            self.fingerprint,
        )

    def apply(self, images: Tensor) -> Tensor:
        """Whiten images ``[..., C, H, W]``; same shape and dtype, computed in float64."""
        return self._linear(images, self.transform, shift=self.mean, offset=None)

    def invert(self, images: Tensor) -> Tensor:
        """Map whitened images ``[..., C, H, W]`` back to the space the fit was made in."""
        return self._linear(images, self.inverse, shift=None, offset=self.mean)

    def _linear(self, images: Tensor, matrix: Tensor, shift: Tensor | None, offset: Tensor | None) -> Tensor:
        if images.dim() < 3 or not images.is_floating_point() or images.shape[-3:].numel() != self.features:
            raise InputError(
                f"ZCA was fitted on {self.features} features per image (C·H·W); "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        matrix = matrix.to(images.device)
        chunks = []
        for rows in images.reshape(-1, self.features).split(_CHUNK):
            rows = rows.double()
            if shift is not None:
                rows = rows - shift.to(images.device)
            rows = rows @ matrix
            if offset is not None:
                rows = rows + offset.to(images.device)
            chunks.append(rows.to(images.dtype))
        return torch.cat(chunks).view(images.shape)


def _from_covariance(flat: Tensor, mean: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Whitening matrix and inverse from the eigendecomposition of the D×D covariance."""
    covariance = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64, device=flat.device)
    for chunk in flat.split(_CHUNK):
        centred = chunk.double() - mean
        covariance.addmm_(centred.T, centred)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance / (flat.shape[0] - 1))
    eigenvalues = eigenvalues.clamp(min=0) + eps
    if not bool((eigenvalues > 0).all()):
        raise InputError("the image covariance is singular; ZCA needs a positive regularization")
    transform = (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T
    inverse = (eigenvectors * eigenvalues.sqrt()) @ eigenvectors.T
    return transform, inverse


def _from_gram(centred: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The same matrices when there are fewer images than features, from the N×N Gram matrix.

    The covariance then has rank below N; its non-zero eigenpairs come from the Gram matrix
    ``Xc Xcᵀ / (N − 1) = V diag(S) Vᵀ`` as ``U = Xcᵀ V diag(1 / sqrt((N − 1) S))``, and every other
    direction has eigenvalue 0, so ``W = I / sqrt(eps) + U diag(1 / sqrt(S + eps) − 1 / sqrt(eps)) Uᵀ``.
    """
    n, d = centred.shape
    if not eps > 0:
        raise InputError(
            f"with fewer images ({n}) than features per image ({d}) the covariance is singular; "
            "ZCA needs a positive regularization"
        )
    eigenvalues, vectors = torch.linalg.eigh(centred @ centred.T / (n - 1))
    kept = eigenvalues > eigenvalues.max() * max(n, d) * torch.finfo(torch.float64).eps
    eigenvalues, vectors = eigenvalues[kept], vectors[:, kept]
    basis = centred.T @ (vectors * ((n - 1) * eigenvalues).rsqrt())
    identity = torch.eye(d, dtype=torch.float64, device=centred.device)
    root = eps**0.5
    transform = identity / root + (basis * ((eigenvalues + eps).rsqrt() - 1 / root)) @ basis.T
    inverse = identity * root + (basis * ((eigenvalues + eps).sqrt() - root)) @ basis.T
    return transform, inverse


def _fingerprint(mean: Tensor, transform: Tensor, inverse: Tensor, regularization: float) -> str:
    digest = hashlib.sha256(f"zca {mean.shape[0]} {regularization!r}\n".encode())
    for tensor in (mean, transform, inverse):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]

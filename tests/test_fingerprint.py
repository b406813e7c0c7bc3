"""One content hash: it reproduces every fingerprint ddrank stores, so each can be computed by it."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ddrank import fingerprint as fingerprint_module
from ddrank.augment import zca
from ddrank.data import cache
from ddrank.evaluation.space import set_fingerprint
from ddrank.fingerprint import fingerprint
from ddrank.labels import teachers
from ddrank.models import create_model


def test_text_and_arrays_hash_in_order():
    assert fingerprint("a", "b") == fingerprint("ab") != fingerprint("b", "a")
    assert len(fingerprint("x")) == 64 and fingerprint("x", length=12) == fingerprint("x")[:12]
    as_array = np.arange(6, dtype=np.int64).reshape(2, 3)
    same = fingerprint(torch.arange(6).reshape(2, 3))
    assert fingerprint(as_array) == same == fingerprint(as_array.tobytes())


def test_large_arrays_hash_in_chunks_to_the_same_digest(monkeypatch):
    array = np.random.default_rng(0).integers(0, 255, size=(100, 3, 4, 4), dtype=np.uint8)
    whole = fingerprint(array)
    monkeypatch.setattr(fingerprint_module, "_CHUNK_BYTES", 100)
    assert fingerprint(array) == whole == fingerprint(array.tobytes())


def test_it_reproduces_the_dataset_zca_teacher_and_set_fingerprints():
    gen = np.random.default_rng(1)
    splits = [
        (gen.integers(0, 255, size=(n, 1, 8, 8), dtype=np.uint8), gen.integers(0, 10, n)) for n in (7, 3)
    ]
    parts = []
    for images, labels in splits:
        parts += [f"{list(images.shape)} {list(labels.shape)}\n", images, np.asarray(labels, dtype="<i8")]
    assert fingerprint(*parts) == cache.fingerprint(splits)

    mean, transform, inverse = torch.randn(4), torch.randn(4, 4), torch.randn(4, 4)
    assert zca._fingerprint(mean, transform, inverse, 0.1) == fingerprint(
        "zca 4 0.1\n", mean, transform, inverse, length=16
    )

    state = {"w": torch.randn(2, 3), "b": torch.zeros(2, dtype=torch.bfloat16), "e": torch.zeros(0)}
    digest = hashlib.sha256()  # how teacher fingerprints were computed before the helper
    for key in sorted(state):
        digest.update(key.encode() + str(state[key].dtype).encode())
        digest.update(state[key].view(torch.uint8).numpy().tobytes() if state[key].numel() else b"")
    assert teachers._state_fingerprint(state) == digest.hexdigest()[:16]

    indices = torch.tensor([3, 1, 2])
    assert set_fingerprint("base", "subset", "normalized", indices) == fingerprint(
        "base:subset:normalized", indices.numpy().astype(np.int64)
    )
    assert set_fingerprint("a", "b", "c") == fingerprint("a:b:c")


def test_batchnorm_teachers_have_a_fingerprint_that_tracks_their_counters():
    model = create_model("ConvNet-2-W16-BN", 1, 10, 8)
    state = model.state_dict()
    assert any(t.dim() == 0 for t in state.values())  # num_batches_tracked
    before = teachers._state_fingerprint(state)
    state["features.1.num_batches_tracked"] += 1
    assert teachers._state_fingerprint(state) != before


def test_implied_and_explicit_class_major_labels_are_one_set():
    import torch

    from ddrank.data.real import dataset_info
    from ddrank.data.synthetic import load_synthetic, validate_synthetic

    info = dataset_info("digits")
    images = torch.rand(info.num_classes * 2, info.channels, info.size, info.size)
    explicit = torch.arange(info.num_classes).repeat_interleave(2)
    shape = {"num_classes": info.num_classes, "channels": info.channels, "size": info.size}
    implied = validate_synthetic(load_synthetic(images), **shape)
    given = validate_synthetic(load_synthetic(images, explicit.to(torch.int32)), **shape)
    assert implied.fingerprint == given.fingerprint
    shuffled = validate_synthetic(load_synthetic(images, explicit.flip(0)), **shape)
    assert shuffled.fingerprint != implied.fingerprint

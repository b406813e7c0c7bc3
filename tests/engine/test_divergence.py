"""Divergence is per student: a member whose training blows up is frozen and scored, the rest go on."""

import math

import pytest
import torch

from ddrank.engine.ensemble import EnsembleTrainer, train_ensemble
from ddrank.engine.job import TrainingSet, TrainJob
from ddrank.engine.loop import train_one
from ddrank.engine.scoring import Tally

from .test_backends import _data, _spec


def _jobs(model: str, epochs: int = 6) -> tuple[TrainJob, TrainJob, TrainJob]:
    spec = _spec(model, epochs=epochs)
    healthy_a = TrainJob(spec, "a", "v", 0.01, 1, "h1")
    # SGD with weight decay 5e-4 at lr 1e6 multiplies the weights by -499 each step: overflow in a few steps.
    exploding = TrainJob(spec, "a", "v", 1e6, 2, "boom")
    healthy_b = TrainJob(spec, "b", "v", 0.05, 3, "h2")
    return healthy_a, exploding, healthy_b


@pytest.mark.parametrize("model", ["ConvNet-2-W16", "MLP"])
def test_an_exploding_member_leaves_the_others_unchanged(model):
    data = _data()
    healthy_a, exploding, healthy_b = _jobs(model)
    mixed = EnsembleTrainer([healthy_a, exploding, healthy_b], data)
    clean = EnsembleTrainer([healthy_a, healthy_b], data)
    for epoch in range(healthy_a.spec.epochs):
        mixed.train_epoch(epoch)
        clean.train_epoch(epoch)
    assert mixed.alive.tolist() == [True, False, True]
    diverged_epoch = mixed.diverged_epochs()[1]
    assert diverged_epoch is not None and 1 <= diverged_epoch < healthy_a.spec.epochs
    for name, value in clean.ensemble.params.items():
        kept = mixed.ensemble.params[name][[0, 2]]
        if model == "MLP":  # no reduction depends on the member count: bit for bit
            assert torch.equal(kept, value), name
        else:  # grouped-convolution bias reductions block by channel count: rounding only
            torch.testing.assert_close(kept, value, atol=1e-6, rtol=0)
        # The diverged member is frozen at its last finite parameters.
        assert torch.isfinite(mixed.ensemble.params[name][1]).all(), name

    together = train_ensemble([healthy_a, exploding, healthy_b], data)
    apart = train_ensemble([healthy_a, healthy_b], data)
    for mixed_result, clean_result in zip([together[0], together[2]], apart, strict=True):
        assert not mixed_result.diverged and mixed_result.diverged_epoch is None
        assert mixed_result.test_acc == clean_result.test_acc
        assert mixed_result.val_acc == clean_result.val_acc
        assert mixed_result.test_per_class == clean_result.test_per_class
    assert together[1].diverged and together[1].diverged_epoch == diverged_epoch
    assert 0.0 <= together[1].test_acc <= 1.0 and math.isfinite(together[1].test_ece)


def test_the_loop_backend_agrees_on_divergence():
    data = _data()
    jobs = _jobs("ConvNet-2-W16")
    together = train_ensemble(list(jobs), data)
    for job, ens in zip(jobs, together, strict=True):
        alone = train_one(job, data)
        assert (alone.diverged, alone.diverged_epoch) == (ens.diverged, ens.diverged_epoch)
        assert abs(alone.test_acc - ens.test_acc) <= 0.01
    assert [r.diverged for r in together] == [False, True, False]


def test_images_at_1e30_diverge_only_the_students_trained_on_them():
    data = _data()
    a = data.train_sets["a"]
    data.train_sets["huge"] = TrainingSet(a.images * 1e30, a.labels, "huge")
    spec = _spec("ConvNet-2-W16", epochs=3)
    healthy = TrainJob(spec, "a", "v", 0.01, 1, "h")
    poisoned = TrainJob(spec, "huge", "v", 0.01, 2, "p")
    mixed = train_ensemble([healthy, poisoned], data)
    (alone,) = train_ensemble([healthy], data)
    assert mixed[1].diverged and mixed[1].diverged_epoch == 1
    assert not mixed[0].diverged and mixed[0].test_acc == alone.test_acc
    loop = train_one(poisoned, data)
    assert loop.diverged and loop.diverged_epoch == 1 and loop.test_acc == mixed[1].test_acc


def test_non_finite_logits_count_as_wrong_and_never_crash_scoring():
    labels = torch.tensor([0, 1, 2, 1])
    good = torch.nn.functional.one_hot(labels, 3).float() * 5
    bad = good.clone()
    bad[0, 0] = math.nan  # would be right, but is not a prediction
    bad[1] = math.inf
    bad[2, 1] = -math.inf  # a finite argmax elsewhere does not rescue a non-finite row
    tally = Tally(2, 3, torch.device("cpu"), detailed=True)
    tally.add(torch.stack([good, bad]), labels)
    clean, broken = tally.results()
    assert clean.top1 == 1.0 and broken.top1 == 0.25
    assert broken.top5 == 0.25 and broken.per_class == (0.0, 0.5, 0.0)
    assert math.isfinite(broken.ece)


def test_a_diverged_member_keeps_its_batch_norm_statistics():
    data = _data()
    spec = _spec("ConvNet-2-W16-BN", epochs=8)
    jobs = [TrainJob(spec, "a", "v", 0.01, 1, "h"), TrainJob(spec, "a", "v", 1e6, 2, "boom")]
    trainer = EnsembleTrainer(jobs, data)
    frozen = None
    for epoch in range(spec.epochs):
        trainer.train_epoch(epoch)
        if frozen is None and trainer.diverged_epochs()[1] is not None:
            frozen = {k: v[1].clone() for k, v in trainer.ensemble.buffers.items()}
            healthy = {k: v[0].clone() for k, v in trainer.ensemble.buffers.items()}
    assert frozen is not None and trainer.diverged_epochs()[1] < spec.epochs
    for name, value in trainer.ensemble.buffers.items():
        assert torch.equal(value[1], frozen[name]), name
    assert not torch.equal(
        trainer.ensemble.buffers["features.1.running_mean"][0], healthy["features.1.running_mean"]
    )

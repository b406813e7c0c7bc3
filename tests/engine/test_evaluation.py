"""Evaluation passes: shared images through stacked filters, and checkpoints scored from snapshots."""

import pytest
import torch

from ddrank.engine.common import held_out_metrics
from ddrank.engine.ensemble import EnsembleTrainer, train_ensemble
from ddrank.engine.job import TrainJob, TrainSpec
from ddrank.engine.options import EngineOptions
from ddrank.protocols import AugmentSpec, OptimizerSpec, ScheduleSpec

from .test_backends import _data, _spec


@pytest.mark.parametrize(("model", "conv"), [("ConvNet-2-W16", "grouped"), ("ConvNet-2-W16-BN", "unfold")])
def test_shared_images_give_each_members_own_logits(model, conv):
    data = _data()
    spec = _spec(model, epochs=1)
    jobs = [TrainJob(spec, "a", "v", 0.05, s, f"k{s}") for s in (1, 2, 3)]
    trainer = EnsembleTrainer(jobs, data, EngineOptions(conv=conv))
    trainer.train_epoch(0)
    images = data.test.images[:40]
    shared = trainer.logits(images, [0, 1, 2])  # one dense first convolution over stacked filters
    with torch.no_grad():
        ensemble = trainer.ensemble
        apart = ensemble.forward(ensemble.params, ensemble.buffers, images.expand(3, *images.shape), False)
    torch.testing.assert_close(shared, apart, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trainer.logits(images, [2]), apart[2:], atol=1e-5, rtol=1e-5)


def test_checkpoint_accuracies_are_those_of_the_weights_at_that_epoch():
    data = _data()
    spec = TrainSpec("ConvNet-2-W16", 1, 10, 8, OptimizerSpec(), ScheduleSpec(), 6, 32, AugmentSpec(), (2, 4))
    jobs = [TrainJob(spec, "a", "v", lr, 1, f"k{lr}") for lr in (0.01, 0.05)]
    results = train_ensemble(jobs, data)
    stopped = EnsembleTrainer(jobs, data)
    for epoch in range(4):
        stopped.train_epoch(epoch)
        if epoch + 1 in (2, 4):
            accs = [m.top1 for m in held_out_metrics(stopped, data.test, [0, 1], 10)]
            assert [dict(r.curve)[epoch + 1] for r in results] == accs
    assert [r.curve[-1] for r in results] == [(6, r.test_acc) for r in results]

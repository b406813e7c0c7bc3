"""``EngineOptions(compile=True)``: the compiled forward and loss train exactly like the eager ones."""

import pytest
import torch

from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import TrainJob
from ddrank.engine.options import EngineOptions

from .test_backends import _data, _spec


@pytest.mark.slow  # inductor compiles C++ on this CPU: one to three minutes on two cores
def test_compiled_step_trains_like_the_eager_step():
    data = _data()
    spec = _spec("ConvNet-2-W16", epochs=2)  # 50 images, batch 32: two batch shapes, two graphs
    jobs = [TrainJob(spec, "a", "v", 0.05, 1, "k1"), TrainJob(spec, "b", "v", 0.01, 2, "k2")]
    eager = EnsembleTrainer(jobs, data, EngineOptions(compile=False))
    compiled = EnsembleTrainer(jobs, data, EngineOptions(compile=True))
    assert compiled._forward_loss is not compiled._forward_and_loss
    for epoch in range(spec.epochs):
        eager.train_epoch(epoch)
        compiled.train_epoch(epoch)
    for name, value in eager.ensemble.params.items():
        torch.testing.assert_close(compiled.ensemble.params[name], value, atol=1e-5, rtol=0, msg=name)

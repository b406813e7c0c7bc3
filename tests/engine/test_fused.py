"""The fused instance-norm + ReLU + pooling path: where it is chosen, and its correctness on this CPU.

The kernel's numerical cases live in ``fused_cases.py`` and run in a child process under the
Triton interpreter (Triton reads TRITON_INTERPRET when a kernel is defined, so it must be set
before this package is imported; this process has imported it already).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddrank.engine import fused
from ddrank.engine.ensemble import EnsembleTrainer
from ddrank.engine.job import TrainJob
from ddrank.engine.options import EngineOptions
from ddrank.engine.packed import packed_program
from ddrank.models import create_model

from .test_backends import _data, _spec

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(fused.triton is None, reason="needs triton")


def _interpreted(selection: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")
    cmd = [sys.executable, "-m", "pytest", "tests/engine/fused_cases.py", "-p", "no:cacheprovider"]
    cmd += ["-q", "-o", "addopts=--import-mode=importlib"]
    done = subprocess.run([*cmd, "-k", selection], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@needs_triton
def test_kernel_matches_eager_under_the_triton_interpreter():
    _interpreted("not ensemble")


@needs_triton
@pytest.mark.slow
def test_fused_ensemble_matches_eager_under_the_triton_interpreter():
    _interpreted("ensemble")


@pytest.mark.parametrize(
    ("model", "fused_steps"),
    [("ConvNet-3", 3), ("ConvNet-2-BN", 0), ("ConvNet-2-LN", 0), ("ConvNet-2-NN", 0), ("MLP", 0)],
)
def test_only_instance_norm_blocks_are_fused(model, fused_steps):
    net = create_model(model, 3, 10, 32)
    program = packed_program(net, fuse=True)
    assert [op.kind for op in program].count("norm_relu_pool") == fused_steps
    plain = packed_program(net)
    assert "norm_relu_pool" not in [op.kind for op in plain]


def test_the_cpu_runs_the_same_eager_ops_with_the_fused_option_on():
    x, weight = torch.randn(2, 4, 8, 8), torch.ones(4)
    assert not fused.applies(x, weight)  # no CUDA tensor, no interpreter
    data = _data()
    spec = _spec("ConvNet-2-W16", epochs=2)
    jobs = [TrainJob(spec, "a", "v", 0.05, 1, "k1"), TrainJob(spec, "b", "v", 0.01, 2, "k2")]
    on = EnsembleTrainer(jobs, data, EngineOptions(fused=True))
    off = EnsembleTrainer(jobs, data, EngineOptions(fused=False))
    for epoch in range(spec.epochs):
        on.train_epoch(epoch)
        off.train_epoch(epoch)
    for name, value in off.ensemble.params.items():
        assert torch.equal(on.ensemble.params[name], value), name


@needs_triton
def test_kernels_compile_for_an_h200_without_one():
    """Triton's ahead-of-time path lowers the kernels to an sm_90 cubin (ptxas ships with Triton):
    compiler-only errors, which the interpreter does not see, show up here without a GPU."""
    triton = fused.triton
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip("this Triton has no ahead-of-time compile API")
    constants = ("H", "W", "G", "PW", "S", "HAS_CB", "X_CL", "Y_CL")
    # The workload's layouts: NCHW in, channels-last out with the bias folded (the first block), then
    # channels-last both ways; and plain NCHW, odd sizes and the largest plane without a bias.
    cases = ((32, 32, True, False, True), (16, 16, True, True, True), (8, 8, False, True, False))
    cases += ((7, 9, False, False, False), (128, 128, True, False, False))
    for height, width, has_bias, x_cl, y_cl in cases:
        planes, tile_width, tile, warps = fused._geometry(height, width, x_cl)
        geometry = (height, width, planes, tile_width, tile, has_bias, x_cl, y_cl)
        values = dict(zip(constants, geometry, strict=True))
        for kernel in (fused._forward_kernel, fused._backward_kernel):
            source = ASTSource(
                fn=kernel,
                signature={name: _argument_type(name, values) for name in kernel.arg_names},
                constexprs={(kernel.arg_names.index(k),): v for k, v in values.items()},
            )
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
            assert compiled.asm["cubin"], (kernel, height, width)


def _argument_type(name: str, constants: dict[str, int]) -> str:
    """Triton's type of a kernel argument as the engine passes it under bf16 autocast."""
    if name in constants:
        return "constexpr"
    if name in ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr"):
        return "*bf16"
    if name.endswith("_ptr"):
        return "*fp32"
    return "fp32" if name == "eps" else "i32"

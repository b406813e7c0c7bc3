"""How the engine executes jobs on a device; none of these change what a job computes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class EngineOptions:
    """Execution settings: CUDA graphs, memory layout, conv lowering and ensemble size limit.

    ``conv`` chooses how the ensemble runs chain-shaped students: ``grouped`` (members packed
    into channels, one grouped conv per layer), ``unfold`` (packed, im2col + one batched matmul
    per layer), ``mixed`` (unfold for the first, thin-input convolution, grouped after) or
    ``vmap`` (torch.func.vmap of the module, as for every other model).

    ``fused``: packed instance norm + ReLU + 2x2 average pooling run as one Triton kernel where it
    applies (CUDA); elsewhere, and with ``fused=False``, they run eagerly.

    ``cudnn_benchmark``: time cuDNN's algorithms for each convolution shape (``True``) or take its
    heuristics (``False``). ``None`` decides per ensemble: off for packed students (ConvNet, MLP),
    whose first convolution is a GEMM and whose grouped convolutions ran within 2% of the tuned
    speed on an H200 while tuning cost 2-5 s per process; on for everything else.

    ``first_conv``: how the first convolution reads images shared by several members (the batches
    of an lr grid, evaluation and teacher images): ``gemm`` as im2col + batched GEMMs, ``native`` as
    the device's convolution; ``auto`` takes ``gemm`` on CUDA for two members or more (cuDNN's grouped
    kernels over 3 input channels run one group at a time there) and ``native`` elsewhere.

    ``compile``: the ensemble's forward and loss go through ``torch.compile`` (inductor fuses the
    norm/ReLU/pool tail itself, so the hand-written kernel is not used for the student then).
    Compiled graphs are cached on disk by inductor and reused by later ensembles and processes.
    Off until it is measured to win on a device with its compile time counted.
    """

    cuda_graphs: bool = True
    cudnn_benchmark: bool | None = None  # None: autotune only where it pays (see autotunes)
    channels_last: bool = False
    norm_in_bf16: bool = True  # under bf16 autocast, run norms on bf16 activations (fp32 statistics)
    conv: Literal["grouped", "unfold", "mixed", "vmap"] = "grouped"
    fused: bool = True
    first_conv: Literal["auto", "gemm", "native"] = "auto"
    compile: bool = False
    max_members: int | None = None
    memory_fraction: float = 0.5  # share of free device memory an ensemble may take
    data_parallel_images: int = (
        500_000  # under torchrun, jobs on at least this many images train on every rank
    )


def default_precision(device: torch.device) -> Precision:
    """bf16 autocast on CUDA devices that support it, fp32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """The autocast context of a precision (disabled for fp32; no cache, so CUDA graphs can capture it)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)

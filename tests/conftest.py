"""Shared test set-up: every test gets its own cache directory and deterministic torch; tests that run
the ``ddrank`` command in separate processes share one way to start them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import ddrank.engine.runner
import ddrank.evaluation.evaluator

# Under pytest-xdist, the workers share the cores: each torch (and each ddrank subprocess a test starts)
# gets its share of threads, so that they do not oversubscribe the machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    torch.set_num_threads(_THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DDRANK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)


@pytest.fixture
def no_training(monkeypatch) -> None:
    """Make any attempt to train fail the test (bad input must be refused before training)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started on bad input")

    monkeypatch.setattr(ddrank.evaluation.evaluator, "run_jobs", refuse)
    monkeypatch.setattr(ddrank.engine.runner, "run_jobs", refuse)


class DDRankProcesses:
    """Starts ``python -m ddrank`` (or ``torchrun``) in subprocesses.

    With a ``root`` they share the cache ``root/cache`` and run one thread each (so that several
    processes on a 2-core machine do not oversubscribe it); without, they inherit this test's cache
    and threads.
    """

    def __init__(self, root: Path | None = None):
        self.root = root

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.root is not None:
            env |= {"OMP_NUM_THREADS": "1", "DDRANK_CACHE_DIR": str(self.root / "cache")}
        env.pop("WORLD_SIZE", None)  # never inherit a torchrun world
        return env

    def command(self, *args: Any) -> list[str]:
        return [sys.executable, "-m", "ddrank", *(str(a) for a in args)]

    def torchrun(self, *args: Any, nproc: int = 2, port: int) -> list[str]:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        return [*launcher, f"--master_port={port}", "-m", "ddrank", *(str(a) for a in args)]

    def run(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ddrank args`` to completion, output captured; with ``check``, a failure shows its stderr."""
        done = subprocess.run(self.command(*args), env=self.env(), capture_output=True, text=True)
        if check:
            assert done.returncode == 0, done.stderr[-3000:]
        return done

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """A command of :meth:`command` or :meth:`torchrun` started in the background."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(command, env=self.env(), text=True, **kwargs)


@pytest.fixture(scope="session")
def ddrank_processes() -> type[DDRankProcesses]:
    """``ddrank_processes(root)``: runs the ddrank command in subprocesses (see DDRankProcesses)."""
    return DDRankProcesses

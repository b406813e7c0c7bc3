"""Shared test set-up: every test gets its own cache directory and deterministic torch."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DDRANK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)

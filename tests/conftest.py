"""Shared fixtures: the real data beside the repo (skipped when absent, unless required) and tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Set ``DSTFUSE_REQUIRE_DATA=1`` (CI does, in ``.ci/run``) to make missing data a failure, not a skip.
REQUIRE_DATA_ENV = "DSTFUSE_REQUIRE_DATA"


def require_data(path: Path) -> Path:
    """``path`` when it exists; else skip the test, or fail it when ``DSTFUSE_REQUIRE_DATA=1``."""
    if path.exists():
        return path
    message = f"real data not found at {path}"
    if os.environ.get(REQUIRE_DATA_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_DATA_ENV}=1: data-dependent tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real registered IR/visible pairs); see :func:`require_data`."""
    return require_data(SHARED_DATA)


@pytest.fixture()
def one_torch_thread():
    """Tiny tensors: one thread is fastest and avoids OpenMP spinning on the shared 2-core CI box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def lite_model():
    """A randomly initialised lite DSTFuse in eval mode (seeded, CPU)."""
    from dstfuse_stream import DSTFuse, get_config

    torch.manual_seed(0)
    return DSTFuse(get_config("lite")).eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep ONNX exports made by `auto` backends out of the user's ~/.cache during tests."""
    monkeypatch.setenv("DSTFUSE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dstfuse-cache"))

"""Shared pytest set-up: repo root on sys.path, the ``slow`` marker, fixtures from tests/fixtures/."""

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    f"tests.fixtures.{p.stem}"
    for p in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
    if not p.name.startswith("_")
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end runs of a minute or more (run in CI)")


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Scripts run in-process (``main(argv)``) set torch's thread count from their ``--threads`` (default 1); put it
    back after each test, or every later test of the session runs on one core."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

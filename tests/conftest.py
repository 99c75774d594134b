"""Test options: the `large` marker.

`python -m pytest -q tests` is the quick loop: tests marked `large` (full-size zoo models, `train/main.py` runs in
subprocesses, preemption and multi-worker runs, LiteRT conversions, the benchmarks' smoke runs) are skipped.
`python -m pytest -q tests --run_large` (or KERASVID_RUN_LARGE=1) runs everything, as CI (`.ci/run`) does. Mark a
test `@pytest.mark.large`, or a whole file `pytestmark = pytest.mark.large`, when it takes seconds on 2 cores.
"""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUN_LARGE_ENV = "KERASVID_RUN_LARGE"


def pytest_addoption(parser):
    parser.addoption("--run_large", action="store_true", default=False,
                     help=f"also run the tests marked `large` (or set {RUN_LARGE_ENV}=1); CI runs them.")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a slow test (seconds on 2 cores), skipped unless --run_large or "
                                       f"{RUN_LARGE_ENV}=1")


def run_large(config):
    """Whether the `large` tests run: `--run_large`, or KERASVID_RUN_LARGE set to 1 / true / yes."""
    return config.getoption("--run_large") or os.environ.get(RUN_LARGE_ENV, "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    if run_large(config):
        return
    skip = pytest.mark.skip(reason=f"large: run with --run_large (or {RUN_LARGE_ENV}=1)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)

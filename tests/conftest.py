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


# The registered models whose per-model tests take seconds each on 2 cores (ResNet-34 and deeper trunks, DenseNet,
# BN-Inception, TVNet, I3D with attention, C3D): `large` where a test is parametrized over the zoo, so that the quick
# loop keeps c2d_resnet18, cpnet_resnet18, nl_resnet18 and i3d.
LARGE_MODELS = frozenset({"action_context_image", "actor_observer_resnet152", "bn_inception", "c2d_resnet34",
                          "c2d_resnet50", "c2d_resnet101", "c3d_resnet18", "cpnet_resnet34", "cpnet_resnet101",
                          "i3d_action_context", "tvnet_bn_inception"})


def large_models(params):
    """`params` of a parametrization over model names (a name, or a tuple whose first item is the name), those of
    `LARGE_MODELS` marked `large`."""
    return [pytest.param(*(p if isinstance(p, tuple) else (p,)), marks=pytest.mark.large)
            if (p[0] if isinstance(p, tuple) else p) in LARGE_MODELS else p for p in params]

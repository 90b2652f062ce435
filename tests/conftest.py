"""Shared test settings: one Hypothesis profile and a seeded random generator."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dc",
    deadline=None,
    max_examples=50,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("dc")


AVX512_REQUIRED = os.environ.get("DC_ENGINE_REQUIRE_AVX512", "").strip() == "1"
"""Set on a CPU with AVX-512F (CI does): the AVX-512 kernel tests then fail instead of
skipping when the kernels are not available."""


def pytest_configure(config):
    config.addinivalue_line("markers", "avx512: runs the AVX-512 kernels; skipped on CPUs "
                                       "without AVX-512F unless DC_ENGINE_REQUIRE_AVX512=1")


def pytest_runtest_setup(item):
    if item.get_closest_marker("avx512") is None:
        return
    from dc_engine import kernels

    if not kernels.SQMM_AVX512:
        if AVX512_REQUIRED:
            pytest.fail("DC_ENGINE_REQUIRE_AVX512=1, but Numba compiles for no AVX-512F here "
                        "(kernels.SQMM_AVX512 is False)", pytrace=False)
        pytest.skip("no AVX-512F on this CPU")


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed, so every test sees the same numbers."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
    """A tiny data set in MNIST's four-file IDX layout (28x28, 96 train / 40 test images)."""
    from _helpers import write_dataset  # tests/ is on sys.path (pytest's prepend mode)

    folder = tmp_path_factory.mktemp("tiny_mnist")
    write_dataset(folder, n_train=96, n_test=40, h=28, w=28)
    return folder


@pytest.fixture(scope="session")
def tiny_mlp_model(tiny_mnist, tmp_path_factory):
    """A LeNet-300-100 file trained for 2 epochs on ``tiny_mnist`` by the CLI (read-only)."""
    from dc_engine.app.cli import main

    out = tmp_path_factory.mktemp("models") / "mlp.h5"
    rc = main(["train", "lenet-300-100", "--out", str(out), "--data", str(tiny_mnist),
               "--epochs", "2", "--val-size", "16", "--no-progress", "--threads", "1"])
    assert rc == 0
    return out

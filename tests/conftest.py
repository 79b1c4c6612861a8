"""Shared fixtures: a small simulated cohort and an exported bundle, made once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.postgres import pg_server, pg_url

__all__ = ["pg_server", "pg_url"]  # fixtures: a real PostgreSQL server, a fresh database


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-device cohort (msprime), 80 samples each, 600 variants, a 120-site panel."""
    pytest.importorskip("msprime")
    from genofed.sim.cohort import simulate

    out = tmp_path_factory.mktemp("cohort")
    simulate(out, devices=3, samples_per_device=80, variants=600, panel_size=120, seed=7,
             test_samples=120, reference_samples=200)
    return out


@pytest.fixture(scope="session")
def logreg_bundle(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logistic-regression bundle exported for the cohort's panel (with its DP-SGD step)."""
    pytest.importorskip("torch")
    from genofed.export.bundle import export_bundle

    return export_bundle("logreg", cohort / "panel.tsv",
                         tmp_path_factory.mktemp("bundle") / "logreg", optimizers=("sgd",),
                         ort_training=False, dpsgd=("sgd",))


@pytest.fixture(scope="session")
def pruned_bundle(cohort: Path, logreg_bundle: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Path:
    """The logistic regression with a fixed random half of its weights pruned."""
    import numpy as np

    from genofed.export.bundle import export_bundle
    from genofed.models.manifest import load_bundle

    rng = np.random.default_rng(3)
    mask = {s.name: (rng.random(s.shape) < 0.5 if len(s.shape) > 1 else np.ones(s.shape))
            .astype(np.float32) for s in load_bundle(logreg_bundle).params}
    return export_bundle("logreg", cohort / "panel.tsv",
                         tmp_path_factory.mktemp("bundle") / "pruned", optimizers=("sgd",),
                         ort_training=False, mask=mask)


def run_genofed(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `genofed` command in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "genofed", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parity/device bundles (tests/bundles.py): from GENOFED_DEVICE_BUNDLES, which the
    Makefile fills in the coordinator profile, else exported here (needs torch)."""
    import os

    given = os.environ.get("GENOFED_DEVICE_BUNDLES")
    if given:
        return Path(given)
    pytest.importorskip("torch")
    from support.bundles import export_all

    return export_all(tmp_path_factory.mktemp("exported"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers (`-n 2 --dist loadgroup`): the integration
    tests, which start Mosquitto and agent processes against stage deadlines, all go to one of
    them, one after another, while the other takes the unit tests."""
    for item in items:
        if item.get_closest_marker("integration") is not None:
            item.add_marker(pytest.mark.xdist_group("broker"))

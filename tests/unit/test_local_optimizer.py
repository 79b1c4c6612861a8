"""The task's local optimizer, end to end on one device: the daemon (`Agent`) trains with the
optimizer the signed task names, on the backend its config names, from the global weights with
fresh optimizer state every round; a task whose optimizer the bundle lacks is skipped, and a
backend or aggregator optimizer the bundle cannot serve is refused at startup. The model
release it trains from must fit the bundle's layout, else it is dropped and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from support.agents import SEED, agent_config
from support.tasks import open_task

from genofed.agent.config import load_agent_config
from genofed.agent.core import Job
from genofed.agent.daemon import Agent
from genofed.agent.ort_training import OrtTrainingTrainer, make_trainer, training_api
from genofed.agent.trainer import StepTrainer
from genofed.aggregator.config import load_aggregator_config
from genofed.aggregator.service import Aggregator
from genofed.errors import GenofedError, MessageError
from genofed.models.signing import ensure_signing_key
from genofed.protocol.roundspec import TrainingSpec
from genofed.protocol.schema import ModelRelease
from genofed.protocol.secagg import (
    SecAggParams,
    SigningIdentity,
)
from genofed.protocol.secagg.keys import IdentitySeed


def _has_ort_training() -> bool:
    try:
        training_api()
    except GenofedError:
        return False
    return True


BACKENDS = ["step", pytest.param("ort-training", marks=pytest.mark.skipif(
    not _has_ort_training(), reason="onnxruntime-training is not installed"))]


@pytest.fixture(scope="module")
def adam_bundle(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logistic regression over the cohort's panel with SGD and Adam step graphs (and the
    onnxruntime-training artifacts, where that package exists)."""
    pytest.importorskip("torch")
    from genofed.export.bundle import export_bundle

    return export_bundle("logreg", cohort / "panel.tsv",
                         tmp_path_factory.mktemp("bundle") / "logreg_adam",
                         optimizers=("sgd", "adam"), ort_training=_has_ort_training())


def _job(agent: Agent, weights: np.ndarray, optimizer: str, round_: int = 1) -> Job:
    """An open round naming `agent` and three other devices, training with `optimizer`."""
    roster = {agent.cfg.device_id: agent.identity.public,
              **{f"dev{i}": SigningIdentity.generate().public for i in (1, 2, 3)}}
    task = open_task("demo", round_, roster, SigningIdentity.generate().public,
                     agent.layout.n_trained, params=SecAggParams(4, 3, 2),
                     training=TrainingSpec(local_epochs=2, batch_size=16, lr=0.01,
                                           optimizer=optimizer))
    return Job(task=task, weights=weights)


@pytest.mark.parametrize("backend", BACKENDS)
def test_agent_trains_with_the_tasks_optimizer(tmp_path: Path, cohort: Path, adam_bundle: Path,
                                               backend: str) -> None:
    agent = Agent(load_agent_config(agent_config(tmp_path, cohort, adam_bundle, backend)))
    assert agent.trainers == {}  # made when a task first names an optimizer
    b = agent.bundle
    rng = np.random.default_rng(11)
    init = {k: v + rng.normal(0, 0.1, v.shape).astype(np.float32) * b.mask()[k]
            for k, v in b.initial_params().items()}  # "global weights" other than the export's
    weights = b.layout.flatten(init).astype(np.float64)

    adam, n = agent.train(_job(agent, weights, "adam"))
    assert n == agent.data.x.shape[0]
    kind = StepTrainer if backend == "step" else OrtTrainingTrainer
    assert set(agent.trainers) == {"adam"} and isinstance(agent.trainers["adam"], kind)
    assert agent.trainers["adam"].optimizer == "adam"

    # The same as that backend's Adam trained directly from the same weights and shuffling.
    direct = make_trainer(b, backend=backend, optimizer="adam")
    direct.set_params(init)
    direct.train(agent.data.x, agent.data.y, epochs=2, batch_size=16, lr=0.01,
                 rng=np.random.default_rng(SEED))
    want = b.layout.flatten(direct.params).astype(np.float64) - weights
    np.testing.assert_allclose(adam, want, rtol=0, atol=1e-6)
    assert np.abs(adam).max() > 1e-3

    # Next round, the cached trainer starts Adam over at zero state: the same shuffling gives
    # the same delta (carried moments and step count would change it).
    agent.rng = np.random.default_rng(SEED)
    again, _ = agent.train(_job(agent, weights, "adam", round_=2))
    np.testing.assert_allclose(again, adam, rtol=0, atol=1e-6)
    assert set(agent.trainers) == {"adam"}

    agent.rng = np.random.default_rng(SEED)
    sgd, _ = agent.train(_job(agent, weights, "sgd", round_=3))
    assert set(agent.trainers) == {"adam", "sgd"}
    assert not np.allclose(sgd, adam, atol=1e-4)
    plain = StepTrainer(b, optimizer="sgd")
    plain.set_params(init)
    plain.train(agent.data.x, agent.data.y, epochs=2, batch_size=16, lr=0.01,
                rng=np.random.default_rng(SEED))
    np.testing.assert_allclose(sgd, b.layout.flatten(plain.params) - weights, rtol=0,
                               atol=1e-5)


def test_round_with_an_optimizer_the_bundle_lacks_is_skipped(
        tmp_path: Path, cohort: Path, logreg_bundle: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    agent = Agent(load_agent_config(agent_config(tmp_path, cohort, logreg_bundle, "step")))
    weights = agent.layout.flatten(agent.bundle.initial_params()).astype(np.float64)
    with caplog.at_level(logging.WARNING, logger="genofed.agent.daemon"):
        assert agent.start_round(_job(agent, weights, "adam", round_=4)) is None
    assert "round 4: cannot take part: " in caplog.text and "'adam'" in caplog.text
    assert agent.participation is None and agent.trainers == {}
    advert = agent.start_round(_job(agent, weights, "sgd", round_=5))  # the daemon goes on
    assert isinstance(advert, bytes) and agent.participation is not None


@pytest.mark.skipif(not _has_ort_training(), reason="onnxruntime-training is not installed")
def test_ort_backend_needs_the_bundles_ort_artifacts(tmp_path: Path, cohort: Path,
                                                     logreg_bundle: Path) -> None:
    cfg = load_agent_config(agent_config(tmp_path, cohort, logreg_bundle, "ort-training"))
    with pytest.raises(GenofedError) as err:
        Agent(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{logreg_bundle}: exported without onnxruntime-training artifacts")
    assert '[training] backend = "ort-training"' in msg and "\n" not in msg


def test_aggregator_refuses_an_optimizer_its_bundle_lacks(tmp_path: Path,
                                                          logreg_bundle: Path) -> None:
    p = tmp_path / "agg.toml"
    p.write_text(f'federation = "demo"\nbundle = "{logreg_bundle}"\n'
                 f'state_dir = "{tmp_path / "state"}"\n[rounds]\noptimizer = "adam"\n')
    with pytest.raises(GenofedError) as err:
        Aggregator(load_aggregator_config(p))
    assert str(err.value) == (f"{logreg_bundle}: no step graph for [rounds] optimizer 'adam' "
                              "(has sgd)")
    assert not (tmp_path / "state").exists()  # refused before it touched its state


def test_model_release_must_fit_the_layout_and_the_update_is_the_trained_coordinates(
        tmp_path: Path, cohort: Path, pruned_bundle: Path) -> None:
    agent = Agent(load_agent_config(agent_config(tmp_path, cohort, pruned_bundle, "step")))
    aggregator = SigningIdentity(IdentitySeed(ensure_signing_key(tmp_path / "agg.key").encode()))
    layout = agent.layout
    assert 0 < layout.n_trained < layout.n_params
    w = np.random.default_rng(2).normal(0, 0.1, layout.n_params).astype(np.float32)
    values, scales = layout.quantize(w * layout.keep)

    def release(version: int, v: np.ndarray, s: np.ndarray) -> ModelRelease:
        return ModelRelease("demo", version, agent.bundle.panel_sha256, v, s)

    for bad in (release(1, values[:-1], scales), release(1, values, scales[1:])):
        with pytest.raises(MessageError, match="model version 1: quantized model has"):
            agent.model_weights(bad)
        assert agent.handle(agent.topics.model, bad.seal(aggregator)) is None
    assert agent.rejected == 2 and agent.core.weights is None  # dropped, counted
    agent.handle(agent.topics.model, release(1, values, scales).seal(aggregator))
    assert agent.rejected == 2 and agent.core.model_version == 1
    assert agent.core.weights is not None
    assert agent.core.weights.tobytes() == layout.dequantize(values, scales).tobytes()

    # The round's ring holds the trained coordinates, nothing else (no weight slot).
    job = _job(agent, agent.core.weights, "sgd", round_=6)
    assert job.task.secagg is not None and job.task.secagg.length == layout.n_trained
    assert isinstance(agent.start_round(job), bytes) and agent.participation is not None

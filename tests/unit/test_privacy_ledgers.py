"""The two privacy ledgers of a cross-device federation, and the task that joins them.

The aggregator plans each DP round with `plan_round` (its noise for what is left of the
target), the task travels sealed, and the device computes the round's cost from the
mechanism's parameters alone. The tests check that the ledgers agree, that the target and
the owner's caps hold, and that a task whose privacy is missing or inconsistent is refused.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from support import simfed

from genofed.agent import consent, ledger
from genofed.aggregator.config import AggregatorConfig, PrivacySection, RoundsSection, StudySection
from genofed.aggregator.privacy import BudgetSpent, PrivacyLedger
from genofed.aggregator.rounds import RoundRandom, plan_round
from genofed.aggregator.simulate import Simulation, clipped_mean, devices, seeded
from genofed.errors import LocalInputError, MessageError
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import SigningIdentity, Stage

DIM = 60
AGG = SigningIdentity.generate()
DEVICES = {f"dev{i:02d}": SigningIdentity.generate() for i in range(6)}


def config(epsilon: float = 2.0, rounds: int = 4, study: str = "PGS-T2D") -> AggregatorConfig:
    return AggregatorConfig(federation="fed", bundle=Path("b"), state_dir=Path("s"),
                            rounds=RoundsSection(rounds=rounds),
                            privacy=PrivacySection(epsilon=epsilon, delta=1e-5),
                            study=StudySection(name=study))


def plan(cfg: AggregatorConfig, ledger_: PrivacyLedger, number: int, version: int
         ) -> SecureTask:
    """Round `number` on model `version`, sealed by the aggregator and opened as a device
    reads it."""
    random = RoundRandom(np.random.default_rng(number), lambda: bytes([number]) * 32)
    task = plan_round(cfg, number, version, {d: k.public.raw for d, k in DEVICES.items()},
                      AGG.public, DIM, random, privacy=ledger_)
    return SecureTask.open(task.seal(AGG), AGG.public, "fed")


def spend_all(cfg: AggregatorConfig, agg: PrivacyLedger, rounds: int,
              state_dir: Path | None = None) -> list[SecureTask]:
    """Plan and spend `rounds` rounds (all devices surviving); the device in `state_dir`
    records each before joining."""
    tasks = []
    for r in range(rounds):
        task = plan(cfg, agg, r, r)
        assert task.privacy is not None and task.codec is not None
        if state_dir is not None:
            assert ledger.refuses(task, consent.read_consent(state_dir), state_dir) is None
            ledger.record(state_dir, task)
        agg.spend(task, len(DEVICES))
        tasks.append(task)
    return tasks


def test_the_rounds_spend_the_target_and_the_two_ledgers_agree(tmp_path: Path) -> None:
    cfg = config(epsilon=2.0, rounds=4)
    agg = PrivacyLedger(2.0, 1e-5)
    tasks = spend_all(cfg, agg, 4, tmp_path)
    assert 0.99 * 2.0 <= agg.epsilon() <= 2.0  # calibrated to the target, never past it
    mine = ledger.spent(tmp_path)
    assert mine.rounds == 4
    assert mine.epsilon(1e-5) == pytest.approx(agg.epsilon(), rel=1e-12)
    assert mine.epsilon(1e-5, "PGS-T2D") == pytest.approx(agg.epsilon(), rel=1e-12)
    # each task declared the ledger's figures before and after it
    for before, after in itertools.pairwise(tasks):
        assert before.privacy and after.privacy
        assert after.privacy.epsilon_before == pytest.approx(before.privacy.epsilon_after)
    # noise calibrated for the fewest survivors (t), so any accepted dropout count is covered
    t = tasks[0].secagg.params.t if tasks[0].secagg else 0
    assert tasks[0].privacy and tasks[0].privacy.min_survivors == t < len(DEVICES)
    entries = [e for e in consent.verify(tmp_path)[0] if e["kind"] == "privacy"]
    assert [e["round"] for e in entries] == [0, 1, 2, 3]
    assert entries[-1]["epsilon_total"] == pytest.approx(agg.epsilon(), rel=1e-5)
    assert "over 4 rounds" in (ledger.describe(tmp_path) or "")


def test_a_restarted_aggregator_composes_what_it_stored_and_stops_at_the_target() -> None:
    cfg = config(epsilon=2.0, rounds=3)
    agg = PrivacyLedger(2.0, 1e-5)
    records = []
    for r in range(2):
        task = plan(cfg, agg, r, r)
        assert task.privacy and task.codec
        records.append(agg.spend(task, 5))
    back = PrivacyLedger.restore(2.0, 1e-5, None, records)
    assert back.epsilon() == pytest.approx(agg.epsilon(), rel=1e-12)
    assert back.epsilon(back.rdp_actual) < back.epsilon()  # 5 survivors > t: more noise
    # a round aborted after its sum was unmasked still spent: the rounds left get more noise
    noisier = plan(cfg, back, 2, 1)
    planned = plan(cfg, PrivacyLedger.restore(2.0, 1e-5, None, records[:1]), 1, 1)
    assert noisier.codec and planned.codec
    assert noisier.codec.noise_variance > planned.codec.noise_variance
    # the same stored spend under a lower target: no round may open
    with pytest.raises(BudgetSpent, match="has spent epsilon"):
        plan(config(epsilon=0.5, rounds=3), PrivacyLedger.restore(0.5, 1e-5, None, records),
             2, 2)


def test_the_amplified_epsilon_is_reported_beside_the_unamplified_one() -> None:
    cfg = config(epsilon=2.0, rounds=4)
    agg = PrivacyLedger(2.0, 1e-5, sample_rate=0.1)
    spend_all(cfg, agg, 4)
    spent = agg.released()
    assert spent.amplified_epsilon is not None and spent.amplified_epsilon < spent.epsilon
    assert "no amplification by sampling" in spent.describe()
    assert "sampled honestly and secretly" in spent.describe()


def test_a_device_sits_out_the_round_that_would_pass_its_owners_cap(tmp_path: Path) -> None:
    cfg = config(epsilon=4.0, rounds=4)
    agg = PrivacyLedger(4.0, 1e-5)
    first = plan(cfg, agg, 0, 0)
    cost = ledger.round_cost(first)
    assert cost is not None and 0 < cost.epsilon < 4.0
    consent.set_consent(tmp_path, "granted", epsilon_cap=cost.epsilon * 1.2)
    owner = consent.read_consent(tmp_path)
    assert ledger.refuses(first, owner, tmp_path) is None
    ledger.record(tmp_path, first)
    assert first.privacy and first.codec
    agg.spend(first, 6)
    second = plan(cfg, agg, 1, 1)
    why = ledger.refuses(second, owner, tmp_path)
    assert why is not None and "would bring this device's epsilon in total to" in why
    assert f"past your cap of {cost.epsilon * 1.2:g}" in why
    # a per-study cap counts only that study's rounds
    consent.set_consent(tmp_path, "granted", study_epsilon_cap=cost.epsilon * 1.2)
    other = plan(config(epsilon=4.0, rounds=4, study="other"), PrivacyLedger(4.0, 1e-5), 0, 0)
    assert ledger.refuses(other, consent.read_consent(tmp_path), tmp_path) is None
    why = ledger.refuses(second, consent.read_consent(tmp_path), tmp_path)
    assert why is not None and "in study 'PGS-T2D'" in why


def test_a_capped_owner_joins_no_round_without_noise_and_a_damaged_ledger_joins_none(
        tmp_path: Path) -> None:
    cfg = dataclasses.replace(config(), privacy=PrivacySection(epsilon=0.0))  # DP off
    random = RoundRandom(np.random.default_rng(0), lambda: b"s" * 32)
    plain = plan_round(cfg, 0, 0, {d: k.public.raw for d, k in DEVICES.items()}, AGG.public,
                       DIM, random)
    assert plain.privacy is None
    assert ledger.refuses(plain, consent.read_consent(tmp_path), tmp_path) is None  # no cap
    consent.set_consent(tmp_path, "granted", epsilon_cap=8.0)
    why = ledger.refuses(plain, consent.read_consent(tmp_path), tmp_path)
    assert why is not None and "adds no differential privacy noise" in why
    task = plan(config(), PrivacyLedger(2.0, 1e-5), 0, 0)
    ledger.record(tmp_path, task)
    path = consent.audit_path(tmp_path)
    path.write_text(path.read_text().replace('"epsilon_round": ', '"epsilon_round": 0.0, "x": '))
    with pytest.raises(LocalInputError, match="chain is broken"):
        ledger.refuses(task, consent.read_consent(tmp_path), tmp_path)


@pytest.mark.parametrize("change, why", [
    (lambda t: {"privacy": None}, "adds noise but the task declares no privacy"),
    (lambda t: {"codec": dataclasses.replace(t.codec, noise_variance=0.0)},
     "declares differential privacy but its codec adds no noise"),
    (lambda t: {"privacy": dataclasses.replace(t.privacy, l2=t.privacy.l2 / 2)},
     "declares sensitivity l2="),
    (lambda t: {"privacy": dataclasses.replace(t.privacy, min_survivors=6)},
     "calibrated for 6 survivors, but its round completes with as few as"),
])
def test_a_task_whose_privacy_is_missing_or_inconsistent_is_refused_in_one_line(
        change: object, why: str) -> None:
    task = plan(config(), PrivacyLedger(2.0, 1e-5), 0, 0)
    with pytest.raises(MessageError, match=why) as err:
        dataclasses.replace(task, **change(task))  # type: ignore[operator]
    assert "\n" not in str(err.value)


def test_the_devices_own_ledger_ignores_the_figures_the_aggregator_signs(
        tmp_path: Path) -> None:
    """A device's cost comes from the mechanism, not from epsilon_before/after: an
    aggregator that understates them does not lower what the device records."""
    task = plan(config(), PrivacyLedger(2.0, 1e-5), 0, 0)
    assert task.privacy
    honest = ledger.round_cost(task)
    lying = dataclasses.replace(task, privacy=dataclasses.replace(
        task.privacy, epsilon_before=0.0, epsilon_after=1e-6))
    cost = ledger.round_cost(lying)
    assert honest and cost and cost.epsilon == honest.epsilon > 1e-3


def test_dp_rounds_through_the_core_with_dropouts_and_a_restart() -> None:
    """The aggregator core's round simulator (real codec, noise, SecAgg+ and ledger; no
    MQTT): rounds with dropouts complete with the noise the ledger paid for, a restart
    mid-run composes the stored spend again, and the target holds."""
    cfg = dataclasses.replace(simfed.config(6), privacy=PrivacySection(epsilon=4.0))
    drop = {("dev002", 1): Stage.MASKED_INPUT, ("dev007", 3): Stage.SHARE_KEYS}
    sim = Simulation(cfg, simfed.MODEL,
                     devices(10, simfed.update, lambda d, r: drop.get((d, r)), seed=10),
                     seeded(10), crash_before={60})
    sim.run()
    assert sim.restarts == 1
    recs = [j.record for j in sim.journal]
    assert [r.status for r in recs] == ["completed"] * 6
    assert [r.participants for r in recs] == [10, 9, 10, 9, 10, 10]
    spent = [r.privacy for r in recs]
    assert all(p is not None for p in spent)
    assert 0.99 * 4.0 <= spent[-1]["epsilon"] <= 4.0  # type: ignore[index]
    assert all(p["survivors"] == r.participants for p, r in zip(spent, recs, strict=True))  # type: ignore[index]
    assert spent[-1]["epsilon_with_survivors"] < spent[-1]["epsilon"]  # type: ignore[index]
    # the sampler's distance from exact Skellam, beside delta: counted, and negligible
    assert 0 < spent[-1]["sampler_delta"] < 1e-3 * 1e-5  # type: ignore[index]
    # the decoded mean carries the noise the ledger paid for, and no more: its residual from
    # the clipped mean has the variance n survivors' Skellam shares give, descaled
    residuals, expected_var = [], []
    for j in sim.journal:
        task = sim.tasks[j.record.round]
        assert task.codec is not None and j.update is not None
        ups = {d: sim.updates[j.record.round][d] for d in j.record.devices}
        r = (j.update - clipped_mean(ups, simfed.KEEP, simfed.CLIP))[simfed.KEEP]
        n, s = len(ups), task.codec.scale
        residuals.append(r)
        expected_var.append(np.full(r.size, n * task.codec.noise_variance / (n * s) ** 2))
    z = np.concatenate(residuals) / np.sqrt(np.concatenate(expected_var))
    assert 0.6 < float(np.var(z)) < 1.5, np.var(z)  # ~100 coordinates: chi2 within 1e-3 tails


def record_config(epsilon: float = 3.0, rounds: int = 4) -> AggregatorConfig:
    return dataclasses.replace(config(epsilon, rounds), privacy=PrivacySection(
        epsilon=epsilon, delta=1e-5, unit="record", sample_rate=0.1, clip=1.0))


def test_record_level_rounds_carry_dpsgd_and_the_two_ledgers_agree(tmp_path: Path) -> None:
    cfg = record_config(epsilon=3.0, rounds=4)
    agg = PrivacyLedger(3.0, 1e-5, unit="record")
    tasks = spend_all(cfg, agg, 4, tmp_path)
    dp = tasks[0].training.dpsgd
    assert dp is not None and dp.clip == 1.0 and dp.sample_rate == 0.1
    assert tasks[0].training.dpsgd_steps == 10  # one local epoch at q = 0.1
    assert tasks[0].codec and tasks[0].codec.noise_variance == 0  # no noise in the codec
    assert 0.99 * 3.0 <= agg.epsilon() <= 3.0
    mine = ledger.spent(tmp_path)
    assert mine.epsilon(1e-5, unit="record") == pytest.approx(agg.epsilon(), rel=1e-12)
    assert mine.epsilon(1e-5, unit="device") == 0.0  # the units never add up
    assert "per record of this device's cohort" in (ledger.describe(tmp_path) or "")
    assert agg.released().unit == "record"


def test_the_sampled_gaussian_curve_is_dp_accountings(tmp_path: Path) -> None:
    """`privacy/sgm.py` (numpy, on devices) against dp-accounting's RDP accountant on the
    same PoissonSampled(Gaussian) event, at every integer order, and the epsilon after it."""
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.rdp import rdp_privacy_accountant

    from genofed.privacy.rdp import ORDERS, rdp_to_epsilon
    from genofed.privacy.sgm import dpsgd_rdp

    ints = [a for a in ORDERS if a == int(a)]
    for z, q, steps in ((1.1, 0.01, 1000), (0.8, 0.16, 80), (3.0, 0.5, 7), (1.0, 1.0, 3)):
        acc = rdp_privacy_accountant.RdpAccountant(orders=ints)
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)),
                    steps)
        mine = dpsgd_rdp(z, q, steps, ints)
        np.testing.assert_allclose(mine, acc._rdp, rtol=1e-9)
        assert rdp_to_epsilon(mine, 1e-5, ints)[0] == pytest.approx(acc.get_epsilon(1e-5),
                                                                     rel=1e-9)


@pytest.mark.parametrize("change, why", [
    (lambda t: {"training": dataclasses.replace(t.training, dpsgd=None)},
     "declares record-level privacy but its training is not DP-SGD"),
    (lambda t: {"privacy": None}, "training is DP-SGD but the task declares no privacy"),
    (lambda t: {"privacy": dataclasses.replace(t.privacy, l2=0.5, l1=0.5)},
     "declares sensitivity 0.5; its DP-SGD clips at 1"),
])
def test_a_record_level_task_that_does_not_fit_is_refused_in_one_line(
        change: object, why: str) -> None:
    task = plan(record_config(), PrivacyLedger(3.0, 1e-5, unit="record"), 0, 0)
    with pytest.raises(MessageError, match=why):
        dataclasses.replace(task, **change(task))  # type: ignore[operator]

"""Membership inference on the cross-device shape (`privacy/attacks.py`), without DP and with it.

One genome a device, 100 devices, a 2,000-site panel, 8 rounds of FedAvg at server lr 1 from
zero, the demo's local training (two epochs of SGD at lr 0.02 on the bundle's step graph), the
clip at the update's expected norm at zero (lr * epochs * |y - 1/2| * sqrt(sites)). Twelve
independent federations, each attacked on its own 100 members against 100 non-members of the
same populations (2,400 targets in all, a standard error of ~0.012 on the pooled AUC), and 8
shadow federations of 100 other genomes for the calibrated statistic. With DP, every device
spends the product's default epsilon per device (`privacyspec.DEFAULT_EPSILON`, 1) at
delta = 1e-5 over its 8 rounds, no amplification by sampling assumed:
Skellam noise through the codec's noise stage (`DpCodec`, `privacy/calibrate.py`), calibrated
with the Skellam RDP bound (`privacy/rdp.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genofed.privacy.attacks import (
    AttackResult,
    aggregate_attack,
    auc,
    auc_se,
    calibrate,
    case_control_scores,
    gdp_auc_ceiling,
    loss_attack,
    tpr_at_fpr,
)
from genofed.protocol.privacyspec import DEFAULT_EPSILON

pytestmark = pytest.mark.coordinator

N, SITES, ROUNDS, FEDS, SHADOWS = 100, 2000, 8, 12, 8
EPSILON, DELTA = DEFAULT_EPSILON["device"], 1e-5
LR, EPOCHS = 0.02, 2


class World:
    """The cohort, the bundle's trainer, and federations run on them."""

    def __init__(self, tmp: Path) -> None:
        from genofed.agent.encode import encode_dosages
        from genofed.agent.trainer import StepTrainer
        from genofed.export.bundle import export_bundle
        from genofed.models.manifest import load_bundle
        from genofed.sim.cohort import SimParams, build_cohort

        c = build_cohort(SimParams(devices=1, samples_per_device=(2 * FEDS + SHADOWS) * N,
                                   variants=2500, panel_size=SITES, seed=11, split="iid",
                                   test_samples=10))
        g = c.devices[0]
        self.x = encode_dosages(g.dosage[:, c.panel_index], c.panel.af)
        self.y = g.phenotype.astype(np.float32)
        b = load_bundle(export_bundle("logreg", c.panel, tmp / "b", optimizers=("sgd",),
                                      ort_training=False))
        self.layout, self.initial = b.layout, b.layout.flatten(b.initial_params())
        self.trainer = StepTrainer(b)
        self.clip = LR * EPOCHS * 0.5 * np.sqrt(SITES)

    def update(self, w: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
        from genofed.privacy.crossdevice import local_delta

        return local_delta(self.trainer, w, self.x[i:i + 1], self.y[i:i + 1], epochs=EPOCHS,
                           lr=LR, rng=rng)

    def attacks(self, codec: object) -> dict[str, AttackResult]:
        """Every attack, pooled over the FEDS federations."""
        from genofed.privacy.crossdevice import first_aggregates, run_federation

        shadows = [range((2 * FEDS + k) * N, (2 * FEDS + k + 1) * N) for k in range(SHADOWS)]
        null = first_aggregates(self.layout, self.initial, shadows, self.update,
                                codec, seed=99)  # type: ignore[arg-type]
        member = np.r_[np.ones(N, bool), np.zeros(N, bool)]
        per: dict[str, list[AttackResult]] = {}
        for f in range(FEDS):
            targets = np.arange(2 * f * N, 2 * (f + 1) * N)  # N members, then N non-members
            run = run_federation(self.layout, self.initial, [targets[:N]] * ROUNDS,
                                 self.update, codec, seed=f)  # type: ignore[arg-type]
            x, y = self.x[targets], self.y[targets]
            # What every device holds: the released models; round 0's is the aggregate itself.
            found = loss_attack(run.released[1:], x, y, member)
            found.update(aggregate_attack(run.released[1] - run.released[0], null, x, y, member))
            for name, res in found.items():
                per.setdefault(name, []).append(res)
        return {name: AttackResult.pooled(rs) for name, rs in per.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pytest.importorskip("torch")
    return World(tmp_path_factory.mktemp("membership"))


def _show(title: str, found: dict[str, AttackResult]) -> None:
    print(f"\n{title}")
    for r in found.values():
        lo, hi = r.ci
        print(f"  {r.name:38s} AUC {r.auc:.3f} [{lo:.3f}, {hi:.3f}]  TPR@1%FPR "
              f"{r.tpr_at_1pct_fpr:.3f}  ({r.members} members, {r.nonmembers} non-members)")


def test_without_dp_both_attacks_see_the_leak(world: World) -> None:
    """Masking without noise: the loss threshold and the calibrated case-control statistic
    both tell members from non-members (measured: loss 0.95-0.97, case-control 0.72-0.80)."""
    from genofed.privacy.crossdevice import plain_codec
    from genofed.protocol.codec import choose_bits

    scale = 1e4
    codec = plain_codec(world.layout.n_trained, world.clip, scale,
                        choose_bits(N, world.clip, scale))
    found = world.attacks(codec)
    _show("no DP", found)
    for name in ("loss_last", "case_control", "case_control_calibrated"):
        assert found[name].ci[0] > 0.6, found[name]


def test_dp_at_the_default_epsilon(world: World) -> None:
    """Skellam noise for the default epsilon (1 per device) over the 8 rounds, no
    amplification. The noise is a Gaussian-like mechanism of mu = sqrt(8) / z, whose ceiling
    for any membership test (AUC 0.569 at epsilon 1) every attack must stay under: one above
    it means the noise or the accounting is wrong (without the noise the loss threshold reads
    0.88). And no attack may sit significantly above the issue's 0.55: the lower end of its
    95% interval at most 0.55. (The point estimate alone would make a flaky test: the scores
    of one federation share its noise, so runs spread more than DeLong's interval says.)

    Measured (same federations): epsilon 1, loss 0.541, case-control 0.506, ceiling 0.569;
    epsilon 2 (the default before the red team chose 1), loss 0.552-0.566 in four runs,
    ceiling 0.629: epsilon 2 over 8 rounds allows an attack above 0.55, and the loss on the
    last model, which sums all 8 rounds of a member's clipped update along its own genotype,
    comes close to the best test there is. At 0.5: 0.513, ceiling 0.537.
    """
    from genofed.privacy.crossdevice import device_epsilon, dp_codec

    dp = dp_codec(EPSILON, DELTA, rounds=ROUNDS, dim=world.layout.n_trained,
                  clip=world.clip, n=N)
    plain, _ = device_epsilon(dp, DELTA, participations=ROUNDS, rounds=ROUNDS,
                              sample_rate=1.0)
    assert plain <= EPSILON and dp.bits <= 18
    ceiling = gdp_auc_ceiling(np.sqrt(ROUNDS) / dp.noise_multiplier)
    found = world.attacks(dp.pipeline)
    _show(f"DP: epsilon {plain:.3f} at delta {DELTA:g} (z = {dp.noise_multiplier:.2f}, "
          f"{dp.bits} bits), no amplification; ceiling for any attack {ceiling:.3f}", found)
    for r in found.values():
        # The best round is picked on the targets themselves, so it can overshoot any attacker
        # that must pick beforehand (at epsilon 0.5 it read 0.539 against a ceiling of 0.537).
        if r.name != "loss_best_round":
            assert r.auc <= ceiling, r
            assert r.ci[0] <= 0.55, r


def test_attack_statistics() -> None:
    """The AUC is scikit-learn's (ties included), DeLong's error matches the bootstrap's,
    the calibration removes each target's own offset, and the case-control statistic is
    the phenotype-signed projection on the aggregate's weights (its bias left out)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    m, n = np.round(rng.normal(0.5, 1, 300), 1), np.round(rng.normal(0, 1, 400), 1)
    y = np.r_[np.ones(300), np.zeros(400)]
    assert auc(m, n) == pytest.approx(roc_auc_score(y, np.r_[m, n]), abs=1e-12)
    _, se = auc_se(m, n)
    boot = [auc(rng.choice(m, m.size), rng.choice(n, n.size)) for _ in range(400)]
    assert se == pytest.approx(np.std(boot), rel=0.2)
    assert tpr_at_fpr(m + 100, n, 0.01) == 1.0 and tpr_at_fpr(n[:300], n + 100, 0.01) == 0.0
    null = rng.normal(size=(50, 3)) * [1, 10, 100] + [0, 5, -5]
    assert calibrate(np.array([0.0, 5.0, -5.0]), null) == pytest.approx([0, 0, 0], abs=0.5)
    x = np.array([[1.0, -1.0], [2.0, 0.0]])
    agg = np.array([1.0, 2.0, 1000.0])
    assert case_control_scores(agg, x, np.array([1, 0])).tolist() == [-1.0, -2.0]
    assert case_control_scores(agg, x).tolist() == [1.0, 2.0]
    assert gdp_auc_ceiling(0.0) == 0.5 and 0.62 < gdp_auc_ceiling(0.46) < 0.63

"""The red team's experiment: federations run with the real codec, noise and clipping, and
every membership attack of `attacks.py` / `lira.py` on what each party saw.

Cross-device shape (one genome a device). A pool of 2N genomes of the same populations is
split into halves `federations` times, balanced (each genome is in exactly half of them), and
a federation of N devices is run on each half for `rounds` rounds (`crossdevice.run_federation`:
each device's update through the codec, the ring sum decoded as the aggregator decodes it,
FedAvg, the model released in INT8). Each federation in turn is the attacked one: its N devices
are the members, the other N genomes of the pool the non-members, and the other federations
are the attacker's shadows (LiRA's leave-one-out evaluation, Carlini et al. 2022), which an
attacker runs on genomes of the same populations it holds. A pool is one seed; the figures of
an attack are its mean over pools with a t confidence interval (`Summary`).

What each party holds, attacked:
- the aggregator: every round's decoded aggregate (Homer's D and Sankararaman's LR test on
  round 0, with and without the phenotype, raw and calibrated on the shadows; the LR test on
  the sum of all rounds' aggregates, raw, offline and online);
- any device or outsider: every released model (the loss threshold on the last, LiRA online
  and offline on it).
Per setting: the epsilon the accountant claims (`crossdevice.device_epsilon`, no
amplification), the ceilings it implies for any attack (`ceiling.py`), and the last model's
test AUC (what the privacy costs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from genofed.privacy.attacks import auc, tpr_at_fpr
from genofed.privacy.ceiling import (
    auc_ceiling,
    fpr_upper,
    profile_auc_ceiling,
    profile_tpr_ceiling,
    rdp_profile,
    tpr_ceiling,
)
from genofed.privacy.lira import confidence, homer_scores, lira, lr_scores, rmia, roc_points

FPRS = (0.01, 0.001)
# attack -> (party, statistic, calibration): calibration is raw, offline or online LiRA
ATTACKS: dict[str, tuple[str, str, str]] = {
    "loss_threshold": ("device", "model", "raw"),
    "lira_offline": ("device", "model", "offline"),
    "lira_online": ("device", "model", "online"),
    "rmia_offline": ("device", "model", "rmia_offline"),
    "rmia_online": ("device", "model", "rmia_online"),
    "homer": ("aggregator", "homer", "raw"),
    "homer_calibrated": ("aggregator", "homer", "offline"),
    "homer_no_phenotype_calibrated": ("aggregator", "homer_np", "offline"),
    "lr_round0": ("aggregator", "lr0", "raw"),
    "lr_round0_calibrated": ("aggregator", "lr0", "offline"),
    "lr_round0_online": ("aggregator", "lr0", "online"),
    "lr_round0_no_phenotype": ("aggregator", "lr0_np", "raw"),
    "lr_round0_no_phenotype_calibrated": ("aggregator", "lr0_np", "offline"),
    "lr_all_rounds": ("aggregator", "lr_all", "raw"),
    "lr_all_rounds_calibrated": ("aggregator", "lr_all", "offline"),
    "lr_all_rounds_online": ("aggregator", "lr_all", "online"),
}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}


@dataclass(frozen=True)
class Shape:
    """A federation's settings as the red team runs them."""

    name: str = "cross-device"
    devices: int = 100
    rounds: int = 8
    lr: float = 0.02
    epochs: int = 2
    federations: int = 16
    pools: int = 3
    delta: float = 1e-5
    per_device: int = 1  # genomes a device: 1 cross-device, a clinic's cohort cross-silo

    @property
    def pool_size(self) -> int:
        """Genomes of a pool: two federations' worth."""
        return 2 * self.devices * self.per_device

    @property
    def steps_lr(self) -> float:
        """c: local steps times the learning rate (one genome a device: one step an epoch)."""
        return self.lr * self.epochs


@dataclass(frozen=True)
class Federation:
    """One federation's outputs: `released[r]` the model after r rounds, `aggregates[r]` round
    r's decoded mean update (flat, logistic layout)."""

    released: list[np.ndarray]
    aggregates: list[np.ndarray]


# (pool's genome indices it trains on, federation seed) -> its outputs
RunFederation = Callable[[np.ndarray, int], Federation]


def balanced_halves(k: int, federations: int, rng: np.random.Generator) -> np.ndarray:
    """[federations, k] membership: complementary pairs of random halves, so each genome is in
    exactly half the federations."""
    if federations < 4 or federations % 2 or k % 2:
        raise ValueError("want an even number (>= 4) of federations over an even pool")
    rows = []
    for _ in range(federations // 2):
        half = np.zeros(k, bool)
        half[rng.permutation(k)[:k // 2]] = True
        rows += [half, ~half]
    return np.array(rows)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64))))


def statistics(fed: Federation, x: np.ndarray, y: np.ndarray, steps_lr: float,
               population: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Every statistic of every pool genome under one federation's outputs, and the released
    model's confidence on `population` (x, y: genomes of no federation, for RMIA)."""
    a0, total = fed.aggregates[0], np.sum(fed.aggregates, axis=0)
    return {"model": confidence(fed.released[-1], x, y),
            "model_pop": confidence(fed.released[-1], *population),
            "homer": homer_scores(a0, x, y, steps_lr),
            "homer_np": homer_scores(a0, x, None, steps_lr),
            "lr0": lr_scores(a0, x, y), "lr0_np": lr_scores(a0, x, None),
            "lr_all": lr_scores(total, x, y)}


@dataclass
class PoolResult:
    """One pool's figures per attack: AUC (mean over the attacked federations), TPR at each
    of `FPRS` and the ROC (members and non-members of all attacked federations together)."""

    auc: dict[str, float] = field(default_factory=dict)
    tpr: dict[str, dict[float, float]] = field(default_factory=dict)
    roc: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    model_auc: list[float] = field(default_factory=list)
    negatives: int = 0  # non-members scored for each attack's TPR (all federations of the pool)


def attack_pool(stats: list[dict[str, np.ndarray]], member: np.ndarray) -> PoolResult:
    """Each federation attacked with the others as shadows. `stats[f][name]` [k]; `member`
    [federations, k]."""
    res = PoolResult()
    feds = len(stats)
    for name, (_, stat, how) in ATTACKS.items():
        raw = table = np.stack([s[stat] for s in stats])  # [feds, k]
        # Each federation's scores centred over the pool: a statistic can carry an offset
        # common to every target of one model (Homer's D sums |mixture| over all sites, which
        # noise inflates), and a member's OUT shadows always include the federation trained on
        # the non-members, so an uncentred offset of that one model ranks all members apart
        # (measured: calibrated Homer without phenotype AUC 0.54 [0.19, 0.89] over pools at
        # epsilon 1, no signal). The attacker sees every shadow model's scores, so may do this.
        table = table - table.mean(axis=1, keepdims=True)
        ins, outs, aucs = [], [], []
        for f in range(feds):
            others = np.arange(feds) != f
            if how == "raw":
                score = table[f]
            elif how.startswith("rmia"):
                pop = np.stack([s["model_pop"] for s in stats])  # [feds, population]
                on, off = rmia(_sigmoid(raw[f]), _sigmoid(raw[others]), member[others],
                               _sigmoid(pop[f]), _sigmoid(pop[others]))
                score = on if how == "rmia_online" else off
            else:
                online, offline = lira(table[f], table[others], member[others])
                score = online if how == "online" else offline
            m = member[f]
            ins.append(score[m])
            outs.append(score[~m])
            aucs.append(auc(score[m], score[~m]))
        m_all, n_all = np.concatenate(ins), np.concatenate(outs)
        res.negatives = n_all.size
        res.auc[name] = float(np.mean(aucs))
        res.tpr[name] = {q: tpr_at_fpr(m_all, n_all, q) for q in FPRS}
        fpr, tpr = roc_points(m_all, n_all)
        res.roc[name] = (fpr.tolist(), tpr.tolist())
    return res


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the t interval at 95% over independent seeds (a point without one),
    clipped to [0, 1] (every figure here is a rate or an AUC)."""
    v = np.asarray(values, np.float64)
    mu = float(v.mean())
    if v.size < 2:
        return mu, mu, mu
    half = _T975.get(v.size - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mu, max(0.0, mu - half), min(1.0, mu + half)


@dataclass
class Privacy:
    """What the accountant claims of a setting, and the ceilings it implies for any attack."""

    epsilon: float | None
    delta: float
    noise_multiplier: float | None = None
    bits: int | None = None
    rdp: np.ndarray | None = None

    def ceilings(self) -> dict[str, object]:
        if self.epsilon is None or not math.isfinite(self.epsilon):
            return {"profile": [], "auc_ceiling": 1.0, "auc_ceiling_profile": 1.0,
                    "tpr_ceiling": {str(q): 1.0 for q in FPRS},
                    "tpr_ceiling_profile": {str(q): 1.0 for q in FPRS}}
        prof = rdp_profile(self.rdp) if self.rdp is not None else [(self.epsilon, self.delta)]
        prof = [*prof, (self.epsilon, self.delta)]
        return {"profile": [list(pair) for pair in prof],
                "auc_ceiling": auc_ceiling(self.epsilon, self.delta),
                "auc_ceiling_profile": profile_auc_ceiling(prof),
                "tpr_ceiling": {str(q): float(tpr_ceiling(q, self.epsilon, self.delta))
                                for q in FPRS},
                "tpr_ceiling_profile": {str(q): float(profile_tpr_ceiling(q, prof))
                                        for q in FPRS}}


    def certified(self, negatives: int) -> dict[str, object]:
        """The TPR ceiling at the FPR a threshold set on `negatives` non-members certifies
        (`ceiling.fpr_upper`: `tpr_at_fpr` lets floor(q n) of them pass), at 97.5%: what a
        measured TPR is held to, since the nominal q is only the sample's rate."""
        if negatives <= 0:
            return {}
        fpr = {str(q): fpr_upper(math.floor(q * negatives), negatives) for q in FPRS}
        if self.epsilon is None or not math.isfinite(self.epsilon):
            return {"fpr_certified": fpr, "tpr_ceiling_certified": dict.fromkeys(fpr, 1.0)}
        return {"fpr_certified": fpr,
                "tpr_ceiling_certified": {q: float(tpr_ceiling(f, self.epsilon, self.delta))
                                          for q, f in fpr.items()}}


def summarize(label: str, privacy: Privacy, pools: Sequence[PoolResult]) -> dict[str, object]:
    """One setting's row of the report: each attack's AUC and TPRs with CIs over the pools,
    the ROC of the first pool, the claimed epsilon, its ceilings and the model's test AUC."""
    attacks = {}
    for name, (party, _, how) in ATTACKS.items():
        a = mean_ci([p.auc[name] for p in pools])
        tprs = {str(q): mean_ci([p.tpr[name][q] for p in pools]) for q in FPRS}
        attacks[name] = {"party": party, "calibration": how, "auc": a[0], "auc_ci": a[1:],
                         "tpr": {q: t[0] for q, t in tprs.items()},
                         "tpr_ci": {q: t[1:] for q, t in tprs.items()},
                         "roc": pools[0].roc[name]}
    model = mean_ci([m for p in pools for m in p.model_auc])
    strongest = max(attacks, key=lambda n: attacks[n]["auc"])  # type: ignore[arg-type,return-value]
    return {"label": label, "epsilon": privacy.epsilon, "delta": privacy.delta,
            "noise_multiplier": privacy.noise_multiplier, "bits": privacy.bits,
            **privacy.ceilings(), **privacy.certified(min(p.negatives for p in pools)),
            "model_auc": model[0], "model_auc_ci": model[1:],
            "strongest_attack": strongest, "attacks": attacks, "pools": len(pools)}


def violations(setting: dict[str, object]) -> list[str]:
    """Attacks that beat a ceiling the claimed epsilon allows: the AUC's point estimate above
    the profile's AUC ceiling, or a TPR's whole interval above the (eps, delta) TPR ceiling at
    the FPR its threshold certifies (`Privacy.certified`; the nominal rate's where a setting
    has no count of non-members). Each is a bug in the noise or the accounting."""
    out = []
    attacks = setting["attacks"]
    assert isinstance(attacks, dict)
    for name, a in attacks.items():
        if a["auc"] > float(setting["auc_ceiling_profile"]):  # type: ignore[arg-type]
            out.append(f"{name}: AUC {a['auc']:.3f} > ceiling "
                       f"{setting['auc_ceiling_profile']:.3f}")
        ceil = setting.get("tpr_ceiling_certified", setting["tpr_ceiling"])
        assert isinstance(ceil, dict)
        for q, (lo, _) in a["tpr_ci"].items():  # a TPR at 0.1% FPR is a count of a few:
            if lo > ceil[q]:  # beaten only if its whole interval is above
                out.append(f"{name}: TPR at FPR {q} in [{lo:.4f}, ...] > ceiling "
                           f"{ceil[q]:.4f}")
    return out

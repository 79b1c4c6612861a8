"""Membership statistics for the red team (`privacy/redteam.py`), beside `privacy/attacks.py`.

Every function is pure: (what a party saw, the targets) -> one score per target, higher
meaning "member".

What each party sees, and the statistic of the literature that fits it:
- the released model (any device or outsider): its logit-scaled confidence in the target's
  true label, phi = (2y - 1) * logit (LiRA's statistic, Carlini et al. 2022: for a binary
  model, log(p / (1 - p)) of the probability given to the true label). The loss threshold is
  a monotone function of phi for a given label (`attacks.loss_scores`).
- the aggregator's decoded aggregate a (the mean update; at a model that starts at zero,
  site by site c/2 times the case-minus-control mean of the standardized genotypes, c = local
  steps times the learning rate, `attacks.py`):
  - Sankararaman et al. (2009)'s likelihood-ratio test. For one genome x (allele counts) and
    the pool frequencies p_hat against the reference p, LR = sum_j x_j log(p_hat_j / p_j) +
    (2 - x_j) log((1 - p_hat_j) / (1 - p_j)); to first order in p_hat - p it is
    sum_j (x_j - 2 p_j)(p_hat_j - p_j) / (p_j (1 - p_j)), which in the standardized genotypes
    the model reads and with the aggregate's case-minus-control shift is <x, a> (signed by the
    phenotype when the attacker knows it, `attacks.case_control_scores`). Written again here
    only as the name the report shows.
  - Homer et al. (2008)'s distance statistic D = sum_j |x_j - pop_j| - |x_j - mix_j|: a
    member is closer to the mixture it is in than to the reference population. In
    standardized units the reference is 0 and the mixture of the target's phenotype class is
    m = (2y - 1) * 2a / c; without the phenotype, the larger D of the two classes.
- RMIA (`rmia`, Zarifzadeh et al. 2024) on the released model: the target's probability
  ratio against the reference models, compared with that of population genomes.
- any statistic, calibrated per target (`lira`): against shadow federations run on the same
  populations, each target's statistic is modelled as Gaussian IN (federations that held it)
  and OUT (those that did not). Online: the log-likelihood ratio of IN over OUT; offline: how
  far above OUT it lies (OUT's z-score, LiRA's one-sided offline test). With a few shadows the
  per-target variances are noisy, so the variance is shared over targets (LiRA's "global
  variance", which Carlini et al. recommend below 64 shadows).
"""

from __future__ import annotations

import numpy as np

from genofed.privacy.attacks import case_control_scores, logreg_logits


def confidence(model: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's statistic on a logistic model: the logit of the probability of the true label."""
    return (2.0 * np.asarray(y, np.float64) - 1.0) * logreg_logits(model, x)


def lr_scores(aggregate: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """Sankararaman et al.'s likelihood-ratio test, first order (module docstring)."""
    return case_control_scores(aggregate, x, y)


def homer_scores(aggregate: np.ndarray, x: np.ndarray, y: np.ndarray | None,
                 steps_lr: float) -> np.ndarray:
    """Homer et al.'s D of each target against the aggregate of a round that started at zero;
    `steps_lr` is c, the local steps times the learning rate (the attacker knows the recipe,
    which the signed task carries)."""
    a = np.asarray(aggregate, np.float64)[:-1]
    xx = np.asarray(x, np.float64)
    base = np.abs(xx).sum(axis=1)

    def d(sign: np.ndarray | float) -> np.ndarray:
        mix = np.outer(np.broadcast_to(sign, (xx.shape[0],)), 2.0 * a / steps_lr)
        return base - np.abs(xx - mix).sum(axis=1)

    if y is not None:
        return d(2.0 * np.asarray(y, np.float64) - 1.0)
    return np.maximum(d(1.0), d(-1.0))


def lira(target: np.ndarray, shadows: np.ndarray, shadow_in: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """(online, offline) LiRA scores of each target. `target` [T]: the statistic under the
    attacked federation; `shadows` [S, T]: under each shadow federation; `shadow_in` [S, T]:
    whether that shadow federation held the target. Every target is scored on the same number
    of IN and OUT shadows (the fewest any target has). With no IN shadow the online score is
    the offline one (what LiRA's online test falls back to)."""
    t = np.asarray(target, np.float64)
    s = np.asarray(shadows, np.float64)
    m = np.asarray(shadow_in, bool)
    if np.any((~m).sum(axis=0) < 1):
        raise ValueError("every target needs at least one shadow federation without it")
    # The same number k of IN and of OUT shadows for every target: in a leave-one-out
    # evaluation a member of the attacked federation is IN one fewer shadow than a non-member,
    # and unequal counts alone (noisier means) would rank the two apart (measured: online
    # AUC 0.46 with no signal at all before this).
    k = int(min(m.sum(axis=0).min(), (~m).sum(axis=0).min()))
    out = ~m & (np.cumsum(~m, axis=0) <= max(k, 1))
    m = m & (np.cumsum(m, axis=0) <= k)
    n_in, n_out = m.sum(axis=0), out.sum(axis=0)
    mu_out = np.where(out, s, 0).sum(axis=0) / n_out
    mu_in = np.where(m, s, 0).sum(axis=0) / np.maximum(n_in, 1)
    var_out = _pooled_var(s, out, mu_out)
    var_in = _pooled_var(s, m, mu_in) if m.any() else var_out
    offline = (t - mu_out) / np.sqrt(var_out)
    online = (-(t - mu_in) ** 2 / (2 * var_in) - 0.5 * np.log(var_in)
              + (t - mu_out) ** 2 / (2 * var_out) + 0.5 * np.log(var_out))
    return np.where(n_in > 0, online, offline), offline


def _pooled_var(s: np.ndarray, mask: np.ndarray, mu: np.ndarray) -> float:
    """The variance around each target's own mean, shared over targets (LiRA's global
    variance); a floor keeps a noise-free statistic from dividing by zero."""
    dev = np.where(mask, s - mu, 0.0)
    dof = max(1, int(mask.sum()) - int((mask.sum(axis=0) > 0).sum()))
    v = float((dev ** 2).sum() / dof)
    return max(v, 1e-12 * (float(np.mean(s ** 2)) + 1e-300))


def roc_points(members: np.ndarray, nonmembers: np.ndarray, points: int = 200
               ) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC at every threshold, thinned to about `points` on a log FPR
    scale (what the report draws), from (0, 0) to (1, 1)."""
    m, n = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    thr = np.unique(np.concatenate([m, n]))[::-1]
    fpr = np.r_[0.0, np.searchsorted(np.sort(-n), -thr, side="right") / n.size]
    tpr = np.r_[0.0, np.searchsorted(np.sort(-m), -thr, side="right") / m.size]
    keep = np.unique(np.r_[0, np.searchsorted(fpr, np.geomspace(1e-4, 1, points)),
                           fpr.size - 1].clip(0, fpr.size - 1))
    return fpr[keep], tpr[keep]


def rmia(target: np.ndarray, shadows: np.ndarray, shadow_in: np.ndarray,
         pop_target: np.ndarray, pop_shadows: np.ndarray, *, offline_a: float = 0.3,
         gamma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(online, offline) RMIA scores (Zarifzadeh et al. 2024), from the probabilities models
    give the true label (`sigmoid(confidence)`). A target's likelihood ratio against the
    population is p(x | target model) / p(x), p(x) its mean over reference models; its score
    is the share of population genomes z (never in any federation: the cohort's test set)
    that it beats by more than `gamma` in (p(x|t)/p(x)) / (p(z|t)/p(z)). Online: p(x) over
    as many IN as OUT shadows; offline: over OUT shadows only, corrected towards the IN
    models' mean by p(x) = ((1 + a) p_out(x) + (1 - a)) / 2 (the paper's offline rule)."""
    t = np.asarray(target, np.float64)
    s = np.asarray(shadows, np.float64)
    m = np.asarray(shadow_in, bool)
    k = int(min(m.sum(axis=0).min(), (~m).sum(axis=0).min()))
    out = ~m & (np.cumsum(~m, axis=0) <= max(k, 1))
    inn = m & (np.cumsum(m, axis=0) <= k)
    p_out = np.where(out, s, 0).sum(axis=0) / out.sum(axis=0)
    p_both = np.where(out | inn, s, 0).sum(axis=0) / (out | inn).sum(axis=0)
    z_t = np.asarray(pop_target, np.float64)
    z_ref = np.asarray(pop_shadows, np.float64).mean(axis=0)
    scores = []
    for px, pz in ((p_both, z_ref), (0.5 * ((1 + offline_a) * p_out + (1 - offline_a)),
                                     0.5 * ((1 + offline_a) * z_ref + (1 - offline_a)))):
        ratio_x = t / np.maximum(px, 1e-300)
        ratio_z = np.sort(z_t / np.maximum(pz, 1e-300))
        scores.append(np.searchsorted(ratio_z, ratio_x / gamma, side="left") / ratio_z.size)
    return scores[0], scores[1]

"""A polygenic liability-threshold trait, accumulated one window at a time.

Causal sites are a random `causal_fraction` of the panel. Each has an effect per source
ancestry (AFR, EUR, EAS) drawn from a normal with unit variances and correlation
`genetic_correlation` between ancestries (below 1, a score learned in one ancestry transfers
imperfectly to another); an admixed (AMR) genome takes the admixture-weighted mean of its
sources' effects (global, not local ancestry: a simplification). Effects act on genotypes
standardized by the reference frequency p, x = (d - 2p) / sqrt(2p(1-p)), so rare and common
causal sites explain the same variance on average.

Liability = g + e: the genetic values g scaled to variance h2 over the phenotyped individuals
(devices and test set), e ~ N(0, 1 - h2); cases are the liabilities above the quantile
1 - prevalence of the phenotyped individuals. An external cohort (for a score trained
elsewhere) shares the scale and the threshold.
"""

from __future__ import annotations

import math

import numpy as np

from genofed.sim.demography import ADMIXTURE, ANCESTRIES, SOURCES
from genofed.sim.windows import dosage

# [sources, ancestries]: how each ancestry's effect mixes the sources' effects
_MIX = np.zeros((len(SOURCES), len(ANCESTRIES)))
_MIX[np.arange(len(SOURCES)), [ANCESTRIES.index(s) for s in SOURCES]] = 1.0
_MIX[:, ANCESTRIES.index("AMR")] = ADMIXTURE


def standardize(d: np.ndarray, af: np.ndarray) -> np.ndarray:
    """(d - 2p) / sqrt(2p(1-p)) of a dosage matrix [n, k]."""
    return (d - 2 * af) / np.sqrt(2 * af * (1 - af))


class Trait:
    """Genetic values of every individual, summed over windows."""

    def __init__(self, ancestry: np.ndarray, genetic_correlation: float, seed: int) -> None:
        self.ancestry = ancestry
        self.rho = genetic_correlation
        self.rng = np.random.default_rng(seed)
        self.g = np.zeros(len(ancestry))
        self.effects: list[np.ndarray] = []  # [k, ancestries] per window

    def draw_effects(self, k: int) -> np.ndarray:
        """[k, ancestries] effects of k new causal sites."""
        # Equicorrelated normals: a shared part sqrt(rho) z0 and an own part sqrt(1-rho) z_k.
        z = self.rng.standard_normal((k, len(SOURCES) + 1))
        src = math.sqrt(self.rho) * z[:, :1] + math.sqrt(1 - self.rho) * z[:, 1:]
        return src @ _MIX

    def add(self, codes: np.ndarray, af: np.ndarray) -> np.ndarray:
        """Add the causal sites of one window (codes [n, k], reference ALT frequency [k]);
        returns their effects [k, ancestries]."""
        beta = self.draw_effects(codes.shape[1])
        if codes.shape[1]:
            x = standardize(dosage(codes).astype(np.float64), af)
            per = x @ beta  # [n, ancestries]
            self.g += per[np.arange(len(self.g)), self.ancestry]
        self.effects.append(beta)
        return beta

    def phenotypes(self, phenotyped: np.ndarray, heritability: float, prevalence: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels int8, liability, scaled genetic values) of every individual."""
        sd = float(self.g[phenotyped].std())
        g = self.g * (math.sqrt(heritability) / sd if sd > 0 else 0.0)
        e = self.rng.normal(scale=math.sqrt(1 - heritability), size=len(g))
        liability = g + e
        threshold = np.quantile(liability[phenotyped], 1 - prevalence)
        return (liability > threshold).astype(np.int8), liability, g


def liability_h2(y: np.ndarray, r2_observed: float) -> float:
    """Observed-scale h2 (variance of a 0/1 trait explained) to the liability scale: Dempster
    and Lerner 1950, Lee et al. 2011 eq. 5 with no ascertainment, K the sample's prevalence."""
    from statistics import NormalDist

    k = float(np.mean(y))
    z = NormalDist().pdf(NormalDist().inv_cdf(1 - k))
    return r2_observed * k * (1 - k) / z**2

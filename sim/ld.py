"""Linkage disequilibrium of a simulated panel: the effective number of independent markers
and r^2 by distance.

M_eff is Li and Ji 2005 (Heredity 95:221): from the eigenvalues lambda of the sites' correlation
matrix, M_eff = sum_i [lambda_i >= 1] + (lambda_i - floor(lambda_i)). Chromosomes are
independent, so the matrix is block-diagonal by window and M_eff a sum over windows. It is
measured on a sample of genomes: with n genomes, sampling noise adds correlations of order
1/sqrt(n), which counts independent markers slightly short when they are many.
"""

from __future__ import annotations

import numpy as np


def li_ji_meff(dosages: np.ndarray) -> float:
    """Li-Ji M_eff of the sites (columns) of a [n, m] dosage matrix; monomorphic sites count 0."""
    d = dosages[:, dosages.std(axis=0) > 0].astype(np.float64)
    if d.shape[1] == 0:
        return 0.0
    if d.shape[1] == 1:
        return 1.0
    lam = np.abs(np.linalg.eigvalsh(np.corrcoef(d, rowvar=False)))
    return float(((lam >= 1) + (lam - np.floor(lam))).sum())


def r2_by_distance(haplotypes: np.ndarray, positions: np.ndarray, edges: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean r^2 between pairs of sites of one chromosome, by distance bin.

    haplotypes: [sites, haplotypes] 0/1; positions: [sites]; edges: bin edges in bp. Returns
    (mean r^2 per bin, pairs per bin); r^2 is of phased haplotypes (the D-based r^2)."""
    h = haplotypes.astype(np.float64)
    h = h - h.mean(axis=1, keepdims=True)
    sd = np.sqrt((h * h).mean(axis=1))
    keep = sd > 0
    h, pos = h[keep] / sd[keep, None], positions[keep]
    r2 = (h @ h.T / h.shape[1]) ** 2
    i, j = np.triu_indices(len(pos), k=1)
    dist = np.abs(pos[j] - pos[i])
    which = np.digitize(dist, edges) - 1
    ok = (which >= 0) & (which < len(edges) - 1)
    sums = np.bincount(which[ok], weights=r2[i[ok], j[ok]], minlength=len(edges) - 1)
    counts = np.bincount(which[ok], minlength=len(edges) - 1)
    return sums / np.maximum(counts, 1), counts


def sigma_d2(haplotypes: np.ndarray, positions: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Ohta and Kimura's sigma_d^2 = E[D^2] / E[p(1-p)q(1-q)] per distance bin: the ratio of
    expectations that coalescent theory predicts (Ohta and Kimura 1971; McVean 2002)."""
    h = haplotypes.astype(np.float64)
    p = h.mean(axis=1)
    c = h - p[:, None]
    d = c @ c.T / h.shape[1]  # D between every pair
    v = p * (1 - p)
    i, j = np.triu_indices(len(p), k=1)
    dist = np.abs(positions[j] - positions[i])
    which = np.digitize(dist, edges) - 1
    ok = (which >= 0) & (which < len(edges) - 1)
    num = np.bincount(which[ok], weights=d[i[ok], j[ok]] ** 2, minlength=len(edges) - 1)
    den = np.bincount(which[ok], weights=(v[i] * v[j])[ok], minlength=len(edges) - 1)
    return num / np.maximum(den, 1e-300)


def ohta_kimura(rho: np.ndarray) -> np.ndarray:
    """sigma_d^2 at equilibrium for rho = 4 N c: (10 + rho) / (22 + 13 rho + rho^2)."""
    return (10 + rho) / (22 + 13 * rho + rho**2)

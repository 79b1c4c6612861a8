"""The simulated cohorts follow their model: the demography is stdpopsim's, allele frequencies by
ancestry differ as the model's coalescence times say, admixed genomes mix their sources in the
stated proportions, LD decays with distance as in direct msprime draws of the same model,
M_eff grows with the panel, and liability-scale heritability comes back from case/control."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("msprime")

from genofed.sim.cohort import Cohort, SimParams, build_cohort
from genofed.sim.demography import ADMIXTURE, MUTATION_RATE, demography
from genofed.sim.genome import RECOMBINATION_RATE
from genofed.sim.ld import sigma_d2
from genofed.sim.trait import liability_h2, standardize
from genofed.sim.windows import dosage

AFR, EUR, EAS, AMR = range(4)


@pytest.fixture(scope="module")
def sparse() -> Cohort:
    """300 genomes of each ancestry; variants a random 5% of the sites of three windows of
    about 300 kb, the panel (excluded below) a mere 30 of them."""
    return build_cohort(SimParams(devices=4, samples_per_device=300, variants=3000,
                                  panel_size=30, seed=11, test_samples=0, reference_samples=100,
                                  missing_rate=0.0, split="iid", chromosomes=(20, 21, 22),
                                  site_spacing=30_000))


def _pooled(c: Cohort) -> tuple[np.ndarray, np.ndarray]:
    hap = np.concatenate([g.haplotypes for g in c.devices], axis=1)  # [sites, n, 2]
    return hap, np.concatenate([g.population for g in c.devices])


def test_demography_is_stdpopsims() -> None:
    """Epoch by epoch, the same sizes, growth rates and migration matrices as stdpopsim's."""
    stdpopsim = pytest.importorskip("stdpopsim")
    theirs = stdpopsim.get_species("HomSap").get_demographic_model("AmericanAdmixture_4B18")
    assert theirs.mutation_rate == MUTATION_RATE
    mine, ref = demography().debug().epochs, theirs.model.debug().epochs
    assert [e.start_time for e in mine] == [e.start_time for e in ref]
    for a, b in zip(mine, ref, strict=True):
        for pa, pb in zip(a.populations, b.populations, strict=True):
            assert (pa.start_size, pa.end_size, pa.growth_rate) == pytest.approx(
                (pb.start_size, pb.end_size, pb.growth_rate), rel=1e-9)
        np.testing.assert_allclose(a.migration_matrix, b.migration_matrix, rtol=1e-9)
    assert [e.time for e in demography().events] == [e.time for e in theirs.model.events]


# 1 - (T_aa + T_bb) / 2 T_ab from the model's mean pairwise coalescence times, computed once
# with msprime's DemographyDebugger.mean_coalescence_time (max_iter=50): minutes of CPU, so
# not in the test.
EXPECTED_FST = {(AFR, EUR): 0.14774, (AFR, EAS): 0.17193, (EUR, EAS): 0.12227,
                (AFR, AMR): 0.09651}


def test_fst_by_ancestry_follows_coalescence_times(sparse: Cohort) -> None:
    """Hudson's F_ST = 1 - mean within-pair diversity / between-pair diversity, whose
    expectation is 1 - (T_aa + T_bb) / 2 T_ab (Slatkin 1991). Tolerance 15% relative: three
    windows of ~300 kb carry that much genealogical noise (measured: within 8% on seed 11)."""
    hap, pop = _pooled(sparse)
    h = hap[~sparse.sites.panel]

    def freq(k: int) -> np.ndarray:
        return h[:, pop == k].mean(axis=(1, 2))

    def within(k: int) -> float:
        p, n = freq(k), 2 * int((pop == k).sum())
        return float((2 * p * (1 - p) * n / (n - 1)).sum())

    fsts = {}
    for (a, b), want in EXPECTED_FST.items():
        pa, pb = freq(a), freq(b)
        between = float((pa * (1 - pb) + pb * (1 - pa)).sum())
        fsts[a, b] = 1 - (within(a) + within(b)) / 2 / between
        assert fsts[a, b] == pytest.approx(want, rel=0.15), (a, b)
    assert fsts[AFR, EAS] > fsts[AFR, EUR] > fsts[AFR, AMR]


def test_admixed_frequencies_mix_their_sources(sparse: Cohort) -> None:
    hap, pop = _pooled(sparse)
    common = hap[:, pop != AMR].mean(axis=(1, 2))
    h = hap[(common > 0.02) & (common < 0.98)]
    x = np.stack([h[:, pop == k].mean(axis=(1, 2)) for k in (AFR, EUR, EAS)], axis=1)
    coef = np.linalg.lstsq(x, h[:, pop == AMR].mean(axis=(1, 2)), rcond=None)[0]
    np.testing.assert_allclose(coef, ADMIXTURE, atol=0.05)


def _sigma(hap: np.ndarray, pos: np.ndarray, edges: np.ndarray) -> np.ndarray:
    p = hap.mean(axis=1)
    keep = np.minimum(p, 1 - p) >= 0.05
    return sigma_d2(hap[keep], pos[keep], edges)


def test_ld_decays_with_distance_as_the_model_draws_it() -> None:
    """sigma_d^2 by distance in our chr22 window against two direct msprime draws of the same
    model, sample sizes, length and recombination rate (tskit genotypes, no genofed code):
    within 35% per bin (two windows of 400 kb vary that much), decaying with distance, and
    higher in EUR than in AFR (the out-of-Africa bottleneck)."""
    import msprime

    c = build_cohort(SimParams(devices=2, samples_per_device=300, variants=1500,
                               panel_size=200, seed=5, test_samples=0, reference_samples=60,
                               missing_rate=0.0, split="iid", chromosomes=(22,),
                               ancestry={"AFR": 0.5, "EUR": 0.5}))
    hap, pop = _pooled(c)
    pos = c.positions
    length = c.result.window_lengths[0]
    edges = np.array([2e3, 1e4, 3e4, 1e5])
    draws = []
    for seed in (1, 2):
        ts = msprime.sim_ancestry({"AFR": 300, "EUR": 300}, demography=demography(),
                                  sequence_length=length, recombination_rate=RECOMBINATION_RATE[22],
                                  random_seed=seed)
        ts = msprime.sim_mutations(ts, rate=MUTATION_RATE, random_seed=seed)
        gm, tpos = ts.genotype_matrix(), ts.tables.sites.position
        draws.append([_sigma(gm[:, k * 600:(k + 1) * 600], tpos, edges) for k in (0, 1)])
    want = np.mean(draws, axis=0)  # [ancestry, bin]
    got = np.array([_sigma(hap[:, pop == k].reshape(len(pos), -1), pos, edges)
                    for k in (AFR, EUR)])
    np.testing.assert_allclose(got, want, rtol=0.35)
    assert (np.diff(got, axis=1) < 0).all()
    assert (got[1] > got[0]).all()


def test_meff_grows_with_the_panel() -> None:
    """Li-Ji M_eff on 600 genomes: measured 82 for 100 sites, 219 for 400. The old chr22
    cohorts (window set by the variant count) gave 38 and 124 on the same genomes: markers
    in LD with their neighbours, about 0.3 independent per site against 0.55 here."""
    meff = []
    for panel in (100, 400):
        c = build_cohort(SimParams(devices=2, samples_per_device=300, variants=panel,
                                   panel_size=panel, seed=2, test_samples=0,
                                   reference_samples=100, missing_rate=0.0))
        meff.append(c.result.meff)
    assert meff[1] > 2.5 * meff[0]
    assert meff[1] > 0.45 * 400


def test_liability_heritability_comes_back_from_case_control() -> None:
    """h2 = 0.5 on the liability scale, from 0/1 labels alone: the variance in the labels that
    an OLS on the causal genotypes explains (adjusted R^2), taken to the liability scale by
    Dempster and Lerner's factor K(1-K)/z^2. Within 0.05. One ancestry (EUR) and 200 causal
    sites: the transformation assumes normal genetic values, and a mixture of ancestries'
    means skews them (measured: 0.40 to 0.58 over three seeds of a four-ancestry cohort,
    0.51 to 0.53 for EUR alone). The true genetic values' share of the liability variance
    is checked too (within 0.02)."""
    c = build_cohort(SimParams(devices=5, samples_per_device=4000, variants=2000,
                               panel_size=2000, seed=5, test_samples=0, reference_samples=200,
                               causal_fraction=0.1, heritability=0.5, prevalence=0.1,
                               missing_rate=0.0, ancestry={"EUR": 1.0}, split="iid",
                               chromosomes=(19, 20, 21, 22)))
    codes = np.concatenate([g.codes for g in c.devices])[:, c.result.causal]
    x = standardize(dosage(codes).astype(np.float64), c.sites.ref_af[c.result.causal])
    x = np.column_stack([np.ones(len(x)), x])
    y = np.concatenate([g.phenotype for g in c.devices]).astype(np.float64)
    fit = x @ np.linalg.lstsq(x, y, rcond=None)[0]
    n, k = x.shape
    r2 = 1 - (1 - np.var(fit) / np.var(y)) * (n - 1) / (n - k)
    assert liability_h2(y, r2) == pytest.approx(0.5, abs=0.05)
    assert abs(float(y.mean()) - 0.1) < 0.005
    g, liability = c.result.genetic[:n], c.result.liability[:n]
    assert float(g.var() / liability.var()) == pytest.approx(0.5, abs=0.02)

"""Cohort simulation for `genofed simulate`: devices, a held-out test set and a panel on chr22.

Genotypes come from msprime (two populations split from one ancestor, JC69 nucleotides on a
discrete genome) placed at an offset on GRCh38 chr22. Reference individuals, never on a device
or in the test set, give the panel's allele frequencies. Phenotypes follow a liability-threshold
model over a random subset of panel sites.

Layout written under `out`:

    panel.tsv                       the panel (Panel format)
    cohort.json                     what was simulated (parameters, counts, causal sites)
    devices/dev00/calls.vcf.gz      all variants, phased GT, bgzipped + .tbi
    devices/dev00/phenotypes.tsv    sample<TAB>phenotype
    test/calls.vcf.gz, test/phenotypes.tsv
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from genofed.errors import LocalInputError
from genofed.models.panel import Panel, Site

log = logging.getLogger(__name__)

CONTIG = "chr22"
CONTIG_LENGTH = 50_818_468
BUILD = "GRCh38"
OFFSET = 20_000_000  # inside chr22's sequenced, gene-rich arm
NE = 10_000
SPLIT_GENERATIONS = 4_000
RECOMBINATION_RATE = 1e-8
MUTATION_RATE = 1.25e-8
MIN_PANEL_MAF = 0.05
POPULATIONS = ("A", "B")
POPULATION_SHIFT = 0.25  # liability mean shift of population B, in liability SDs
# haplotypes int8 [sites, individuals, 2], 1-based positions on CONTIG, REF and ALT per site
_Variants = tuple[np.ndarray, np.ndarray, list[str], list[str]]
_GT_BYTES = np.frombuffer(b"0|0\t0|1\t1|0\t1|1\t./.\t", dtype=np.uint8).reshape(5, 4)


@dataclass(frozen=True)
class Group:
    """One set of individuals written as one VCF: a device or the test set."""

    name: str
    samples: tuple[str, ...]
    population: np.ndarray  # int8 [n]: 0 = A, 1 = B
    haplotypes: np.ndarray  # int8 [n_variants, n, 2]: ALT allele indicator
    missing: np.ndarray  # bool [n_variants, n]
    phenotype: np.ndarray  # int8 [n]

    @property
    def dosage(self) -> np.ndarray:
        """True ALT dosage, float32 [n, n_variants], NaN where written as missing."""
        d = self.haplotypes.sum(axis=2).T.astype(np.float32)
        d[self.missing.T] = np.nan
        return d


@dataclass(frozen=True)
class Cohort:
    """A simulated cohort held in memory, before it is written."""

    positions: np.ndarray  # int64 [n_variants], 1-based on CONTIG
    ref: tuple[str, ...]
    alt: tuple[str, ...]
    panel: Panel
    panel_index: np.ndarray  # int64 [panel_size]: rows of the variants that form the panel
    causal_ids: tuple[str, ...]
    devices: tuple[Group, ...]
    test: Group
    params: SimParams


@dataclass(frozen=True)
class CohortInfo:
    """Where a written cohort lives and what it holds."""

    root: Path
    panel: Path
    manifest: Path
    device_ids: tuple[str, ...]
    device_vcfs: tuple[Path, ...]
    device_phenotypes: tuple[Path, ...]
    test_vcf: Path
    test_phenotypes: Path
    variants: int
    panel_size: int
    samples_per_device: int
    test_samples: int
    reference_samples: int
    seed: int


@dataclass(frozen=True)
class SimParams:
    """What to simulate; validated on construction."""

    devices: int
    samples_per_device: int
    variants: int
    panel_size: int
    seed: int
    test_samples: int = 400
    reference_samples: int = 500
    causal_fraction: float = 0.2
    heritability: float = 0.6
    prevalence: float = 0.3
    missing_rate: float = 0.005
    split: str = "population"

    def __post_init__(self) -> None:
        for k in ("devices", "samples_per_device", "variants", "panel_size", "seed",
                  "test_samples", "reference_samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise LocalInputError(f"simulate: {k} must be a non-negative integer, got {v!r}")
        checks = (
            (self.devices >= 1, f"devices must be >= 1, got {self.devices}"),
            (self.samples_per_device >= 1,
             f"samples_per_device must be >= 1, got {self.samples_per_device}"),
            (self.reference_samples >= 10,
             f"reference_samples must be >= 10, got {self.reference_samples}"),
            (1 <= self.panel_size <= self.variants,
             f"panel_size must lie in 1..variants ({self.variants}), got {self.panel_size}"),
            (0.0 < self.causal_fraction <= 1.0,
             f"causal_fraction must lie in (0, 1], got {self.causal_fraction}"),
            (0.0 <= self.heritability <= 1.0,
             f"heritability must lie in [0, 1], got {self.heritability}"),
            (0.0 < self.prevalence < 1.0, f"prevalence must lie in (0, 1), got {self.prevalence}"),
            (0.0 <= self.missing_rate < 1.0,
             f"missing_rate must lie in [0, 1), got {self.missing_rate}"),
            (self.split in ("population", "iid"),
             f"split must be 'population' or 'iid', got {self.split!r}"),
        )
        for ok, what in checks:
            if not ok:
                raise LocalInputError(f"simulate: {what}")


def simulate(out: Path, *, devices: int, samples_per_device: int, variants: int, panel_size: int,
             seed: int, test_samples: int = 400, reference_samples: int = 500,
             causal_fraction: float = 0.2, heritability: float = 0.6, prevalence: float = 0.3,
             missing_rate: float = 0.005, split: str = "population") -> CohortInfo:
    """Simulate a cohort and write devices, test set, panel and cohort.json under `out`."""
    params = SimParams(devices=devices, samples_per_device=samples_per_device,
                       variants=variants, panel_size=panel_size, seed=seed,
                       test_samples=test_samples, reference_samples=reference_samples,
                       causal_fraction=causal_fraction, heritability=heritability,
                       prevalence=prevalence, missing_rate=missing_rate, split=split)
    return write_cohort(build_cohort(params), Path(out))


def build_cohort(params: SimParams) -> Cohort:
    """Simulate a cohort in memory (genotypes, panel, phenotypes); deterministic in the seed."""
    p = params
    rng = np.random.default_rng(p.seed)
    # Population of every individual, in order: devices, test, reference.
    pops = [_device_populations(i, p.samples_per_device, p.split, rng) for i in range(p.devices)]
    pops.append(_mixed(p.test_samples, rng))
    pops.append(_mixed(p.reference_samples, rng))
    pop_all = np.concatenate(pops)
    # hap_all: int8 [variants, n_individuals, 2], ALT indicator per haplotype.
    hap_all, positions, ref, alt = _simulate_variants(pop_all, p.variants, p.panel_size,
                                                      p.reference_samples, rng)
    n_phe = p.devices * p.samples_per_device + p.test_samples
    ref_af = hap_all[:, n_phe:, :].mean(axis=(1, 2))
    panel_index = _choose_panel(ref_af, p.panel_size, rng)
    ids = [f"{CONTIG}_{positions[i]}_{ref[i]}_{alt[i]}" for i in range(p.variants)]
    panel = Panel(build=BUILD, sites=tuple(
        Site(chrom=CONTIG, pos=int(positions[i]), ref=ref[i], alt=alt[i], id=ids[i],
             af=float(ref_af[i])) for i in panel_index))
    n_causal = max(1, round(p.causal_fraction * p.panel_size))
    causal = np.sort(rng.choice(panel_index, size=n_causal, replace=False))
    phenotype = _liability_threshold(hap_all[causal, :n_phe, :].sum(axis=2).T.astype(np.float64),
                                     pop_all[:n_phe], p.heritability, p.prevalence, rng)
    missing = rng.random((p.variants, n_phe)) < p.missing_rate
    groups: list[Group] = []
    for i in range(p.devices + 1):
        name = f"dev{i:02d}" if i < p.devices else "test"
        lo = i * p.samples_per_device
        hi = n_phe if i == p.devices else lo + p.samples_per_device
        groups.append(Group(
            name=name, samples=tuple(f"{name}_s{j:04d}" for j in range(hi - lo)),
            population=pop_all[lo:hi], haplotypes=hap_all[:, lo:hi, :],
            missing=missing[:, lo:hi], phenotype=phenotype[lo:hi]))
    return Cohort(positions=positions, ref=tuple(ref), alt=tuple(alt), panel=panel,
                  panel_index=panel_index, causal_ids=tuple(ids[i] for i in causal),
                  devices=tuple(groups[:p.devices]), test=groups[p.devices], params=p)


def write_cohort(cohort: Cohort, out: Path) -> CohortInfo:
    """Write a simulated cohort's VCFs, phenotypes, panel and cohort.json under `out`."""
    out = Path(out)
    p = cohort.params
    try:
        out.mkdir(parents=True, exist_ok=True)
        panel_path = out / "panel.tsv"
        panel_path.write_text(cohort.panel.to_tsv())
        vcfs, phenos = [], []
        for g in (*cohort.devices, cohort.test):
            d = out / "test" if g is cohort.test else out / "devices" / g.name
            d.mkdir(parents=True, exist_ok=True)
            vcfs.append(_write_vcf(d / "calls.vcf.gz", cohort, g))
            phenos.append(d / "phenotypes.tsv")
            rows = "".join(f"{s}\t{int(y)}\n" for s, y in zip(g.samples, g.phenotype, strict=True))
            phenos[-1].write_text("sample\tphenotype\n" + rows)
        info = CohortInfo(
            root=out, panel=panel_path, manifest=out / "cohort.json",
            device_ids=tuple(g.name for g in cohort.devices), device_vcfs=tuple(vcfs[:-1]),
            device_phenotypes=tuple(phenos[:-1]), test_vcf=vcfs[-1], test_phenotypes=phenos[-1],
            variants=len(cohort.positions), panel_size=len(cohort.panel),
            samples_per_device=p.samples_per_device, test_samples=p.test_samples,
            reference_samples=p.reference_samples, seed=p.seed)
        info.manifest.write_text(json.dumps(_manifest(cohort, info), indent=2) + "\n")
    except OSError as exc:
        raise LocalInputError(f"{out}: cannot write cohort: {exc}") from None
    log.info("simulated cohort in %s: %d devices, %d variants, panel of %d", out,
             len(cohort.devices), info.variants, info.panel_size)
    return info


def _device_populations(i: int, n: int, split: str, rng: np.random.Generator) -> np.ndarray:
    """Populations of a device's samples: 80% from A or B by turn under non-IID, else 50/50."""
    if split == "iid":
        return _mixed(n, rng)
    major = i % 2
    n_major = round(0.8 * n)
    pops = np.array([major] * n_major + [1 - major] * (n - n_major), dtype=np.int8)
    return rng.permutation(pops)


def _mixed(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n, dtype=np.int8) % 2).astype(np.int8)


def _simulate_variants(pop: np.ndarray, variants: int, panel_size: int, n_reference: int,
                       rng: np.random.Generator) -> _Variants:
    """Biallelic SNVs for individuals of the given populations: haplotypes, positions, alleles."""
    import msprime

    demography = msprime.Demography()
    for name in POPULATIONS:
        demography.add_population(name=name, initial_size=NE)
    demography.add_population(name="ANC", initial_size=NE)
    demography.add_population_split(time=SPLIT_GENERATIONS, derived=list(POPULATIONS),
                                    ancestral="ANC")
    counts = {name: int((pop == k).sum()) for k, name in enumerate(POPULATIONS)}
    n_hap = 2 * len(pop)
    # Expected segregating sites per bp: theta * harmonic(n), plus margin for the split and
    # for the share of sites rare in the reference set.
    per_bp = 4 * NE * MUTATION_RATE * (np.log(n_hap) + 0.58)
    length = int(1.3 * variants / per_bp) + 1000
    for _attempt in range(8):
        if OFFSET + length > CONTIG_LENGTH:
            raise LocalInputError(f"simulate: {variants} variants do not fit on {CONTIG}")
        ts = msprime.sim_ancestry(
            samples={k: v for k, v in counts.items() if v}, demography=demography,
            sequence_length=length, recombination_rate=RECOMBINATION_RATE,
            discrete_genome=True, random_seed=int(rng.integers(1, 2**31 - 1)))
        ts = msprime.sim_mutations(ts, rate=MUTATION_RATE, model=msprime.JC69(),
                                   discrete_genome=True,
                                   random_seed=int(rng.integers(1, 2**31 - 1)))
        keep = _biallelic_sites(ts)
        if len(keep) >= variants:
            result = _extract(ts, keep, pop, variants, panel_size, n_reference, rng)
            if result is not None:
                return result
        log.debug("simulate: %d biallelic sites on %d bp, need %d; extending", len(keep),
                  length, variants)
        length = int(length * 1.6)
    raise LocalInputError(f"simulate: could not reach {variants} variants with "
                          f"{panel_size} common panel candidates")


def _biallelic_sites(ts: Any) -> list[int]:
    """Ids of sites with exactly two alleles (drops multi-allelic and colliding positions)."""
    seen: set[int] = set()
    keep = []
    for site in ts.sites():
        alleles = {site.ancestral_state} | {m.derived_state for m in site.mutations}
        pos = int(site.position)
        if len(alleles) == 2 and pos not in seen:
            keep.append(site.id)
        seen.add(pos)
    return keep


def _extract(ts: Any, keep: list[int], pop: np.ndarray, variants: int, panel_size: int,
             n_reference: int, rng: np.random.Generator) -> _Variants | None:
    """Haplotypes of `variants` of the kept sites, individuals in the order of `pop`."""
    drop = np.setdiff1d(np.arange(ts.num_sites), keep)
    ts = ts.delete_sites(drop)
    gm = (ts.genotype_matrix() != 0).view(np.int8)  # biallelic: any derived allele is the ALT
    # Individuals are grouped by population in the tree sequence; deal them out to `pop`.
    ind_nodes = np.array([ind.nodes for ind in ts.individuals()])
    ind_pop = ts.tables.nodes.population[ind_nodes[:, 0]]
    names = [p.metadata["name"] for p in ts.populations()]
    order = np.empty(len(pop), dtype=np.int64)
    for k, name in enumerate(POPULATIONS):
        if (pop == k).any():
            avail = rng.permutation(np.flatnonzero(ind_pop == names.index(name)))
            order[pop == k] = avail
    sample_col = np.full(ts.num_nodes, -1, dtype=np.int64)
    sample_col[ts.samples()] = np.arange(ts.num_samples)
    cols = sample_col[ind_nodes[order]]  # [n, 2]: genotype-matrix column of each haplotype
    hap = gm[:, cols]  # [sites, n, 2]
    positions = ts.tables.sites.position.astype(np.int64)
    sites = list(ts.sites())
    ref = [s.ancestral_state for s in sites]
    alt = [next(m.derived_state for m in s.mutations if m.derived_state != s.ancestral_state)
           for s in sites]
    return _subsample(hap, positions, ref, alt, variants, panel_size, n_reference, rng)


def _subsample(hap: np.ndarray, positions: np.ndarray, ref: list[str], alt: list[str],
               variants: int, panel_size: int, n_reference: int, rng: np.random.Generator
               ) -> _Variants | None:
    """Keep exactly `variants` sites, enough of them common in the reference to draw a panel."""
    af = hap[:, hap.shape[1] - n_reference:, :].mean(axis=(1, 2))
    common = np.flatnonzero(np.minimum(af, 1 - af) >= MIN_PANEL_MAF)
    if len(common) < panel_size:
        return None
    chosen = rng.choice(len(af), size=variants, replace=False)
    n_common = np.isin(chosen, common).sum()
    if n_common < panel_size:  # top up with common sites, replacing rare ones
        extra = rng.choice(np.setdiff1d(common, chosen), size=panel_size - n_common,
                           replace=False)
        rare = chosen[~np.isin(chosen, common)]
        drop = rng.choice(rare, size=len(extra), replace=False)
        chosen = np.concatenate([np.setdiff1d(chosen, drop), extra])
    idx = np.sort(chosen)
    pos = positions[idx] + OFFSET + 1
    return (np.ascontiguousarray(hap[idx]), pos, [ref[i] for i in idx], [alt[i] for i in idx])


def _choose_panel(ref_af: np.ndarray, panel_size: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of `panel_size` variants with reference MAF >= 0.05, sorted by position."""
    cand = np.flatnonzero(np.minimum(ref_af, 1 - ref_af) >= MIN_PANEL_MAF)
    if len(cand) < panel_size:
        raise LocalInputError(f"simulate: only {len(cand)} variants have reference MAF >= "
                              f"{MIN_PANEL_MAF}, cannot build a panel of {panel_size}; "
                              f"raise reference_samples or variants")
    return np.sort(rng.choice(cand, size=panel_size, replace=False))


def _liability_threshold(x: np.ndarray, pop: np.ndarray, h2: float, prevalence: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Case/control labels from standardized causal dosages `x` [n, n_causal]."""
    sd = x.std(axis=0)
    xs = np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
    g = xs @ rng.normal(size=x.shape[1])
    g = (g - g.mean()) / (g.std() or 1.0) * np.sqrt(h2)
    liability = g + POPULATION_SHIFT * pop + rng.normal(scale=np.sqrt(1 - h2), size=len(pop))
    threshold = np.quantile(liability, 1 - prevalence)
    return (liability > threshold).astype(np.int8)


def _write_vcf(path: Path, cohort: Cohort, g: Group) -> Path:
    """Write a group's phased calls as bgzipped, tabix-indexed VCF; return the .vcf.gz path."""
    header = [
        "##fileformat=VCFv4.2",
        "##source=genofed.sim.cohort",
        f"##reference={BUILD}",
        f"##contig=<ID={CONTIG},length={CONTIG_LENGTH},assembly={BUILD}>",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                   *g.samples]),
    ]
    codes = g.haplotypes[:, :, 0] * 2 + g.haplotypes[:, :, 1]
    codes = np.where(g.missing, 4, codes)
    body = _GT_BYTES[codes]  # uint8 [sites, samples, 4]: "0|1\t" ...
    body[:, -1, 3] = ord("\n")
    plain = path.with_suffix("")  # calls.vcf
    with plain.open("wb") as f:
        f.write(("\n".join(header) + "\n").encode())
        for pos, r, a, row in zip(cohort.positions, cohort.ref, cohort.alt, body, strict=True):
            f.write(f"{CONTIG}\t{pos}\t{CONTIG}_{pos}_{r}_{a}\t{r}\t{a}\t.\tPASS\t.\tGT\t".encode())
            f.write(row.tobytes())
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def _manifest(cohort: Cohort, info: CohortInfo) -> dict[str, object]:
    def rel(p: Path) -> str:
        return str(p.relative_to(info.root))

    def describe(g: Group, vcf: Path, pheno: Path) -> dict[str, object]:
        return {"id": g.name, "vcf": rel(vcf), "phenotypes": rel(pheno),
                "samples": len(g.samples), "cases": int(g.phenotype.sum()),
                "population_counts": {name: int((g.population == k).sum())
                                      for k, name in enumerate(POPULATIONS)}}

    return {
        "format": "genofed-cohort/1",
        "build": BUILD,
        "contig": CONTIG,
        "contig_length": CONTIG_LENGTH,
        "params": asdict(cohort.params),
        "model": {"Ne": NE, "split_generations": SPLIT_GENERATIONS,
                  "recombination_rate": RECOMBINATION_RATE, "mutation_rate": MUTATION_RATE,
                  "populations": list(POPULATIONS), "population_shift": POPULATION_SHIFT,
                  "offset": OFFSET},
        "variants": info.variants,
        "region": f"{CONTIG}:{int(cohort.positions[0])}-{int(cohort.positions[-1])}",
        "panel": rel(info.panel),
        "panel_size": info.panel_size,
        "causal_sites": list(cohort.causal_ids),
        "devices": [describe(g, v, p) for g, v, p in
                    zip(cohort.devices, info.device_vcfs, info.device_phenotypes,
                        strict=True)],
        "test": describe(cohort.test, info.test_vcf, info.test_phenotypes),
    }

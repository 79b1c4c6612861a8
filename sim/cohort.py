"""Cohort simulation for `genofed simulate`: devices, a held-out test set, a genome-wide panel.

Genomes come from msprime under an out-of-Africa model with an admixed American population
(`sim/demography.py`), one window per chosen autosome of GRCh38 (`sim/genome.py`,
`sim/windows.py`), in stated ancestry proportions per device or clinic. Reference genomes,
never on a device or in the test set, give the panel's allele frequencies. The trait is
polygenic, liability-threshold, with effects that may differ across ancestries
(`sim/trait.py`).

`build_cohort` holds a small cohort in memory (tests, benchmarks); `simulate` streams: each
window's genotypes go to a scratch file as soon as they are drawn and each group's VCF is
written from those, so no more than one window of every genome, or every window of one group,
is in memory at once.

Layout written under `out`:

    panel.tsv                       the panel (Panel format)
    cohort.json                     what was simulated (parameters, counts, M_eff, causal sites)
    devices/dev00/calls.vcf.gz      all variants, phased GT, bgzipped + .tbi
    devices/dev00/phenotypes.tsv    sample<TAB>phenotype
    devices/dev00/ancestry.tsv      sample<TAB>ancestry
    test/calls.vcf.gz, test/phenotypes.tsv, test/ancestry.tsv
    score/PGS_SIM_EUR.txt           with external_samples: a score trained on that cohort
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.errors import LocalInputError
from genofed.models.panel import Panel, Site
from genofed.sim import engine
from genofed.sim.demography import ANCESTRIES
from genofed.sim.genome import BUILD, contig_length
from genofed.sim.params import SimParams
from genofed.sim.windows import WindowData

__all__ = ["BUILD", "CONTIG", "CONTIG_LENGTH", "Cohort", "CohortInfo", "Group", "SimParams",
           "build_cohort", "simulate", "write_cohort"]

log = logging.getLogger(__name__)

CONTIG = "chr22"  # the contig of a one-chromosome cohort (`chromosomes=(22,)`)
CONTIG_LENGTH = contig_length(22)


@dataclass(frozen=True)
class Group:
    """One set of individuals written as one VCF: a device or the test set."""

    name: str
    samples: tuple[str, ...]
    population: np.ndarray  # int8 [n]: index into ANCESTRIES
    codes: np.ndarray  # uint8 [n, n_variants]: 2 * first + second haplotype, +4 if missing
    phenotype: np.ndarray  # int8 [n]

    @property
    def haplotypes(self) -> np.ndarray:
        """int8 [n_variants, n, 2]: ALT allele indicator per haplotype."""
        c = self.codes.T
        return np.stack([(c >> 1) & 1, c & 1], axis=2).astype(np.int8)

    @property
    def missing(self) -> np.ndarray:
        """bool [n_variants, n]: written as ./."""
        return (self.codes.T & 4) > 0

    @property
    def dosage(self) -> np.ndarray:
        """True ALT dosage, float32 [n, n_variants], NaN where written as missing."""
        d = (((self.codes >> 1) & 1) + (self.codes & 1)).astype(np.float32)
        d[(self.codes & 4) > 0] = np.nan
        return d

    @property
    def ancestry(self) -> list[str]:
        return [ANCESTRIES[k] for k in self.population]


@dataclass(frozen=True)
class Cohort:
    """A simulated cohort held in memory, before it is written."""

    sites: engine.Sites
    panel: Panel
    panel_index: np.ndarray  # int64 [panel_size]: rows of the variants that form the panel
    causal_ids: tuple[str, ...]
    devices: tuple[Group, ...]
    test: Group
    params: SimParams
    result: engine.RunResult

    @property
    def positions(self) -> np.ndarray:
        return self.sites.positions

    @property
    def ref(self) -> tuple[str, ...]:
        return self.sites.ref

    @property
    def alt(self) -> tuple[str, ...]:
        return self.sites.alt


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
    meff: float = float("nan")
    chromosomes: tuple[int, ...] = ()
    score: Path | None = None  # PGS Catalog file trained on the external cohort, if any


def simulate(out: Path, **kwargs: object) -> CohortInfo:
    """Simulate a cohort (SimParams' fields as keywords) and write it under `out`, streaming."""
    params = SimParams(**kwargs)  # type: ignore[arg-type]
    out = Path(out)
    _prepare(out)
    scratch = Path(tempfile.mkdtemp(prefix=".windows-", dir=out))
    try:
        files: list[tuple[Path, int]] = []

        def keep(i: int, w: WindowData) -> None:
            files.append((scratch / f"w{i:02d}.u8", w.codes.shape[1]))
            w.codes.tofile(files[-1][0])

        result = engine.run(params, keep)
        info = _write(out, params, result, lambda lo, hi: np.concatenate(
            [_rows(f, width, lo, hi) for f, width in files], axis=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return info


def _rows(path: Path, width: int, lo: int, hi: int) -> np.ndarray:
    """Rows lo..hi of a window's codes from its scratch file. Read, not memory-mapped: mapped
    pages would count in the resident set (and its peak) as if every genotype were held."""
    with path.open("rb") as f:
        f.seek(lo * width)
        return np.fromfile(f, dtype=np.uint8, count=(hi - lo) * width).reshape(hi - lo, width)


def build_cohort(params: SimParams) -> Cohort:
    """Simulate a cohort in memory (genotypes, panel, phenotypes); deterministic in the seed."""
    kept: list[np.ndarray] = []
    result = engine.run(params, lambda i, w: kept.append(w.codes))
    codes = np.concatenate(kept, axis=1)
    groups = [Group(name=name, samples=samples, population=result.ancestry[lo:hi],
                    codes=codes[lo:hi], phenotype=result.phenotype[lo:hi])
              for name, samples, lo, hi in _groups(params)]
    sites = result.sites
    return Cohort(sites=sites, panel=_panel(sites), panel_index=np.flatnonzero(sites.panel),
                  causal_ids=tuple(sites.ids[i] for i in result.causal),
                  devices=tuple(groups[:-1]), test=groups[-1], params=params, result=result)


def write_cohort(cohort: Cohort, out: Path) -> CohortInfo:
    """Write a cohort held in memory under `out` (the same files `simulate` writes)."""
    out = Path(out)
    _prepare(out)
    allg = (*cohort.devices, cohort.test)
    starts = np.cumsum([0] + [len(g.samples) for g in allg])
    by_start = {int(s): g for s, g in zip(starts, allg, strict=False)}
    return _write(out, cohort.params, cohort.result, lambda lo, hi: by_start[lo].codes)


def _prepare(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalInputError(f"{out}: cannot write cohort: {exc}") from None


def _groups(p: SimParams) -> list[tuple[str, tuple[str, ...], int, int]]:
    """(name, samples, first, end) of every device, then the test set."""
    width = max(2, len(str(p.devices - 1)))
    out = []
    for i in range(p.devices):
        name = f"dev{i:0{width}d}"
        lo = i * p.samples_per_device
        out.append((name, tuple(f"{name}_s{j:04d}" for j in range(p.samples_per_device)), lo,
                    lo + p.samples_per_device))
    lo = p.devices * p.samples_per_device
    out.append(("test", tuple(f"test_s{j:04d}" for j in range(p.test_samples)), lo,
                lo + p.test_samples))
    return out


def _panel(sites: engine.Sites) -> Panel:
    ids = sites.ids
    return Panel(build=BUILD, sites=tuple(
        Site(chrom=sites.contigs[i], pos=int(sites.positions[i]), ref=sites.ref[i],
             alt=sites.alt[i], id=ids[i], af=float(sites.ref_af[i]))
        for i in np.flatnonzero(sites.panel)))


def _score(out: Path, p: SimParams, result: engine.RunResult) -> Path:
    """The external cohort's score as a PGS Catalog file under out/score/."""
    from genofed.sim.score import train_score, write_score

    panel = _panel(result.sites)
    ext = result.phenotype[p.n_phenotyped + p.reference_samples:]
    weights = train_score(panel, result.external_panel, ext)
    return write_score(out / "score" / f"PGS_SIM_{p.external_ancestry}.txt", panel, weights,
                       ancestry=p.external_ancestry, n=p.external_samples)


def _write(out: Path, p: SimParams, result: engine.RunResult, codes_of: engine.CodesOf
           ) -> CohortInfo:
    from genofed.sim.manifest import manifest_json
    from genofed.sim.vcfout import prefixes, write_vcf

    sites = result.sites
    fixed = prefixes(sites)
    vcfs, phenos = [], []
    try:
        panel_path = out / "panel.tsv"
        panel_path.write_text(_panel(sites).to_tsv())
        groups = _groups(p)
        for name, samples, lo, hi in groups:
            d = out / "test" if name == "test" else out / "devices" / name
            d.mkdir(parents=True, exist_ok=True)
            vcfs.append(write_vcf(d / "calls.vcf.gz", sites, samples, codes_of(lo, hi), fixed))
            phenos.append(d / "phenotypes.tsv")
            y = result.phenotype[lo:hi]
            phenos[-1].write_text("sample\tphenotype\n" + "".join(
                f"{s}\t{int(v)}\n" for s, v in zip(samples, y, strict=True)))
            (d / "ancestry.tsv").write_text("sample\tancestry\n" + "".join(
                f"{s}\t{ANCESTRIES[k]}\n" for s, k in zip(samples, result.ancestry[lo:hi],
                                                          strict=True)))
        score = _score(out, p, result) if p.external_samples else None
        info = CohortInfo(
            root=out, panel=panel_path, manifest=out / "cohort.json",
            device_ids=tuple(g[0] for g in groups[:-1]), device_vcfs=tuple(vcfs[:-1]),
            device_phenotypes=tuple(phenos[:-1]), test_vcf=vcfs[-1], test_phenotypes=phenos[-1],
            variants=len(sites.positions), panel_size=int(sites.panel.sum()),
            samples_per_device=p.samples_per_device, test_samples=p.test_samples,
            reference_samples=p.reference_samples, seed=p.seed, meff=result.meff,
            chromosomes=p.chromosomes, score=score)
        info.manifest.write_text(manifest_json(p, result, info, groups))
    except OSError as exc:
        raise LocalInputError(f"{out}: cannot write cohort: {exc}") from None
    log.info("simulated cohort in %s: %d devices, %d variants, panel of %d, M_eff %.0f", out,
             len(info.device_ids), info.variants, info.panel_size, info.meff)
    return info

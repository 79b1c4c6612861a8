"""`genofed simulate` at scale: 10^5 genomes x 10^4 panel sites, streamed to per-clinic VCFs.

One run of `simulate` (50 clinics of 2,000 genomes, a 1,000-genome test set, 500 reference
genomes, 12,000 variants of which 10,000 panel sites on all 22 autosomes, the default
four-ancestry mix). The peer, measured in the same run, is msprime itself: the time spent in
`msprime.sim_ancestry` and `sim_mutations` for the same windows, which nothing of ours can go
below. Peak memory (VmHWM) is set against the size of the whole genotype matrix (one byte a
genotype), which the streaming writer never holds. One clinic's VCF is read back with pysam.
CPU seconds are reported beside wall seconds: the machine is shared, and the peer's time is
wall time in the same run, so the ratio holds either way.

    genofed bench simulate_scale      ->  benchmarks/results/simulate_scale.json
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLINICS, PER_CLINIC, TEST, REFERENCE = 50, 2000, 1000, 500
PANEL, VARIANTS, SEED = 10_000, 12_000, 1


def main() -> None:
    import pysam

    from genofed.cli.bench import peak_rss_mb, write_results
    from genofed.sim import windows
    from genofed.sim.cohort import simulate

    spent = {"msprime": 0.0}
    inner = windows._simulate

    def timed(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args)
        finally:
            spent["msprime"] += time.perf_counter() - t0

    windows._simulate = timed  # type: ignore[assignment]
    root = Path(tempfile.mkdtemp(prefix="genofed-simscale-"))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        info = simulate(root / "cohort", devices=CLINICS, samples_per_device=PER_CLINIC,
                        variants=VARIANTS, panel_size=PANEL, seed=SEED, test_samples=TEST,
                        reference_samples=REFERENCE)
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        peak = peak_rss_mb()
        with pysam.VariantFile(str(info.device_vcfs[0])) as vf:
            records = sum(1 for _ in vf)
            samples = len(vf.header.samples)
        size_mb = sum(p.stat().st_size for p in (root / "cohort").rglob("*.vcf.gz")) / 2**20
    finally:
        shutil.rmtree(root, ignore_errors=True)
    genomes = CLINICS * PER_CLINIC + TEST + REFERENCE
    matrix_mb = genomes * VARIANTS / 2**20
    row = {"genomes": genomes, "variants": VARIANTS, "panel": PANEL, "clinics": CLINICS,
           "seconds": total, "cpu_seconds": cpu, "msprime_seconds": spent["msprime"],
           "peak_rss_mb": peak,
           "genotype_matrix_mb": matrix_mb, "vcf_gz_mb": size_mb, "meff": info.meff,
           "clinic0_records": records, "clinic0_samples": samples}
    write_results("simulate_scale", [row], {
        "seconds": total, "cpu_seconds": cpu, "minutes": total / 60,
        "under_10_minutes": total < 600,
        "msprime_seconds": spent["msprime"], "seconds_over_msprime": total / spent["msprime"],
        "peak_rss_mb": peak, "peak_over_genotype_matrix": peak / matrix_mb,
        "meff": info.meff, "vcf_gz_mb": size_mb})


if __name__ == "__main__":
    sys.exit(main())

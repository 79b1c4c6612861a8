"""Extracting a panel from a sequencer VCF: `genofed features` against bcftools, same file,
same run.

The file is one device's single-sample VCF.gz (tabix-indexed) of RECORDS SNV records on GRCh38
chr22, GT:GQ:DP as Clair3/DeepVariant write them. Panels of 10,000 and 100,000 of its sites.
The peer named by the issue is `bcftools view -R panel | bcftools query` (region jumps through
the index); `bcftools view -T` (one streaming pass over the file) is timed too, for honesty.
Every figure is the median of REPEATS runs of the whole command, start-up included; genofed's
dosages are checked against bcftools's genotypes before any time is reported. A second, small
part (benchmarks/_small_real.py) does the same on a real public file of about 10,000 records
with a few hundred panel sites, where start-up dominates, and times the start-up.

    genofed bench vcf_extract      ->  benchmarks/results/vcf_extract.json
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RECORDS, PANELS, REPEATS, SEED = 1_000_000, (10_000, 100_000), 3, 11
CONTIG, LENGTH = "chr22", 50_818_468
HEADER = f"""##fileformat=VCFv4.2
##source=genofed-benchmark
##contig=<ID={CONTIG},length={LENGTH}>
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=LowQual,Description="Low quality variant">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype Quality">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read Depth">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tSAMPLE
"""


def make_vcf(path: Path, rng: np.random.Generator) -> tuple[np.ndarray, list[str], list[str]]:
    """Write RECORDS records, bgzip (bcftools's bgzip) and tabix them; positions and alleles."""
    pos = np.sort(rng.choice(np.arange(16_000_000, LENGTH - 1_000_000), RECORDS, replace=False))
    bases = np.array(list("ACGT"))
    r = rng.integers(0, 4, RECORDS)
    a = (r + rng.integers(1, 4, RECORDS)) % 4
    ref, alt = bases[r].tolist(), bases[a].tolist()
    gts = np.array(["0/1", "1/1", "0|1", "1|0"])[rng.integers(0, 4, RECORDS)]
    gq, dp = rng.integers(3, 60, RECORDS), rng.integers(4, 60, RECORDS)
    filt = np.where(gq < 5, "LowQual", "PASS")
    plain = path.with_suffix("")
    with plain.open("w") as f:
        f.write(HEADER)
        f.writelines(f"{CONTIG}\t{p}\t.\t{x}\t{y}\t{q * 1.0:.1f}\t{fl}\t.\tGT:GQ:DP\t{g}:{q}:{d}\n"
                     for p, x, y, q, fl, g, d in zip(pos, ref, alt, gq, filt, gts, dp,
                                                     strict=True))
    subprocess.run(["bgzip", "-f", "-@2", str(plain)], check=True)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(path)], check=True)
    return pos, ref, alt


def timed(cmd: str) -> float:
    """Median seconds of REPEATS runs of a shell command."""
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check(npz: Path, query_out: Path, n: int) -> None:
    """genofed's dosages equal the ALT counts of bcftools's PASS genotypes, site by site."""
    from genofed.agent.vcf import load_npz

    d = load_npz(npz)
    got = d.dosage[0]
    want = []
    for line in query_out.read_text().splitlines():
        filt, gt = line.split("\t")[4:6]
        want.append(float(gt.count("1")) if filt == "PASS" else np.nan)
    if len(want) != n:
        raise SystemExit(f"bcftools returned {len(want)} records for {n} sites")
    np.testing.assert_array_equal(got, np.array(want, dtype=np.float32))


def main() -> None:
    import _small_real
    from _small_real import panel_jobs

    from genofed.cli.bench import write_results
    from genofed.models.panel import Panel, Site

    rng = np.random.default_rng(SEED)
    genofed = f"{sys.executable} -m genofed"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        vcf = t / "calls.vcf.gz"
        t0 = time.perf_counter()
        pos, ref, alt = make_vcf(vcf, rng)
        print(f"made {RECORDS} records in {time.perf_counter() - t0:.1f} s "
              f"({vcf.stat().st_size / 1e6:.1f} MB)", flush=True)
        for n in PANELS:
            idx = np.sort(rng.choice(RECORDS, n, replace=False))
            panel = Panel("GRCh38", tuple(Site(CONTIG, int(pos[i]), ref[i], alt[i], f"s{i}", 0.3)
                                          for i in idx))
            jobs = panel_jobs(t / "out", panel, vcf, genofed)
            npz, q = t / "out.npz", t / "out_query.tsv"
            for tool, cmd in jobs.items():
                seconds = timed(cmd)
                rows.append({"panel_sites": n, "tool": tool, "seconds": seconds})
                print(f"{n} sites, {tool}: {seconds:.2f} s", flush=True)
            check(npz, q, n)
            import json

            report = json.loads((t / "out_report.json").read_text())
            rows[-3]["access"] = report["access"]
    by = {(r["panel_sites"], r["tool"]): r["seconds"] for r in rows}
    summary = {
        "records": RECORDS,
        "genofed_s_100k": by[(100_000, "genofed")],
        "bcftools_s_100k": by[(100_000, "bcftools -R")],
        "ratio_vs_bcftools_100k": by[(100_000, "genofed")] / by[(100_000, "bcftools -R")],
        "ratio_vs_bcftools_10k": by[(10_000, "genofed")] / by[(10_000, "bcftools -R")],
        "ratio_vs_bcftools_stream_100k": (by[(100_000, "genofed")]
                                          / by[(100_000, "bcftools -T")]),
    }
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory() as tmp:
        summary.update(_small_real.run(Path(tmp), timed, rows))
    write_results("vcf_extract", rows, summary)


if __name__ == "__main__":
    main()

"""The small-file half of `genofed bench vcf_extract`: a real public file, 1000 Genomes chr22 as
Debian's r-bioc-variantannotation ships it (10,376 records, 5 samples, no ##contig lines,
bgzipped and tabix-indexed), against a panel of SITES of its records, `genofed features`
beside `bcftools view -R | bcftools query`; here start-up is most of genofed's time, so the
start-up (the imports of the `features` command, against a bare interpreter) is timed too.

The file comes from `make corpus` (build/corpus, or GENOFED_CORPUS); without it this half is
skipped with a note.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pysam

SITES, SEED = 300, 15
VA_CHR22 = "variantannotation/usr/lib/R/site-library/VariantAnnotation/extdata/chr22.vcf.gz"
IMPORTS = "import genofed.cli.main, genofed.agent.vcf, genofed.models.pgs, genofed.cli.progress"


def corpus_file() -> Path | None:
    root = Path(os.environ.get("GENOFED_CORPUS",
                               Path(__file__).resolve().parents[1] / "build" / "corpus"))
    path = root / VA_CHR22
    return path if path.exists() else None


def _median(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def startup(repeats: int = 7) -> dict[str, float]:
    """Seconds to start Python bare, and with the imports of `genofed features`."""
    def python(code: str) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, "-c", code], check=True)
    bare = _median(python("pass"), repeats)
    full = _median(python(IMPORTS), repeats)
    return {"python_s": bare, "features_imports_s": full, "imports_s": full - bare}


QUERY = "bcftools query -f '%CHROM\\t%POS\\t%REF\\t%ALT\\t%FILTER[\\t%GT]\\n'"


def panel_jobs(stem: Path, panel: Any, vcf: Path, genofed: str) -> dict[str, str]:
    """Write `panel` and its regions beside `stem`; the commands that extract its sites:
    genofed features (to STEM.npz, report STEM_report.json) and bcftools view with -R and
    -T piped to one query (to STEM_query.tsv and its .T)."""
    t, name = stem.parent, stem.name
    (t / f"{name}_panel.tsv").write_text(panel.to_tsv())
    (t / f"{name}_regions.tsv").write_text("".join(f"{s.chrom}\t{s.pos}\n"
                                                   for s in panel.sites))
    q = t / f"{name}_query.tsv"
    return {
        "genofed": f"{genofed} features --panel {t}/{name}_panel.tsv --vcf {vcf} "
                   f"-o {t}/{name}.npz --report {t}/{name}_report.json --min-match-rate 0",
        "bcftools -R": f"bcftools view -R {t}/{name}_regions.tsv {vcf} | {QUERY} > {q}",
        "bcftools -T": f"bcftools view -T {t}/{name}_regions.tsv {vcf} | {QUERY} > {q}.T",
    }


def run(tmp: Path, timed: Callable[[str], float], rows: list[dict[str, Any]]
        ) -> dict[str, Any]:
    """Time both tools on the file, check genofed's dosages against bcftools's genotypes;
    the summary figures."""
    from genofed.agent.vcf import load_npz
    from genofed.models.panel import Panel, Site

    vcf = corpus_file()
    if vcf is None:
        print("small real file: not found (make corpus); skipped", flush=True)
        return {"small_real_file": "skipped: run make corpus"}
    with pysam.VariantFile(str(vcf)) as vf:
        records = [(r.chrom, r.pos, r.ref, r.alts[0]) for r in vf
                   if r.alts and len(r.alts) == 1 and set(r.ref + r.alts[0]) <= set("ACGT")]
    seen: dict[tuple[str, int], int] = {}
    for c, p, _, _ in records:
        seen[(c, p)] = seen.get((c, p), 0) + 1
    single = [r for r in records if seen[(r[0], r[1])] == 1]
    pick = sorted(np.random.default_rng(SEED).choice(len(single), SITES, replace=False))
    sites = [single[i] for i in pick]
    panel = Panel("GRCh37", tuple(Site(c, p, r, a, f"{c}:{p}", 0.3) for c, p, r, a in sites))
    jobs = panel_jobs(tmp / "real", panel, vcf, f"{sys.executable} -m genofed")
    del jobs["bcftools -T"]
    npz, q = tmp / "real.npz", tmp / "real_query.tsv"
    got: dict[str, float] = {}
    for tool, cmd in jobs.items():
        got[tool] = timed(cmd)
        rows.append({"file": "1000G chr22 (r-bioc-variantannotation)", "panel_sites": SITES,
                     "tool": tool, "seconds": got[tool]})
        print(f"small real file, {SITES} sites, {tool}: {got[tool]:.2f} s", flush=True)
    want = {}
    for line in q.read_text().splitlines():
        c, p, r, a, filt, *gts = line.split("\t")
        want[(c, int(p), r, a)] = [np.nan if filt not in ("PASS", ".") or "." in g else
                                   float(g.replace("|", "/").split("/").count("1")) for g in gts]
    d = load_npz(npz)
    np.testing.assert_array_equal(d.dosage, np.array([want[s] for s in sites]).T)
    import json

    report = json.loads((tmp / "real_report.json").read_text())
    s = startup()
    print(f"start-up: python {s['python_s']:.3f} s, with the imports of features "
          f"{s['features_imports_s']:.3f} s", flush=True)
    return {"small_real_file": {
        "records": len(records), "panel_sites": SITES, "genofed_s": got["genofed"],
        "bcftools_s": got["bcftools -R"], "ratio_vs_bcftools": got["genofed"]
        / got["bcftools -R"], "access": report["access"], "startup": s}}

"""Sequencer-like calls made by real tools, for checking the VCF reader against the truth.

From one simulated individual's two haplotypes (msprime, `genofed.sim.cohort`): long reads are
simulated with PBSIM (Debian's `pbsim`, its CLR model tuned towards nanopore accuracy), aligned
with `minimap2 -ax map-ont`, sorted and indexed with samtools, and called with bcftools three
ways: variant-only (`call -mv`), gVCF (`mpileup -g` / `call -g`), and forced at the panel's
alleles (`call -C alleles -T`). A window in the middle of the region gets no reads at all, so
the panel sites inside it are absent from every file. The truth genotypes ride along.

`make test` runs this through a session fixture (tests/test_read_pipeline.py); it can also be
run alone:

    python tests/make_read_calls.py OUT_DIR
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genofed.models.panel import Panel
from genofed.sim.cohort import CONTIG, CONTIG_LENGTH, SimParams, build_cohort

TOOLS = ("pbsim", "minimap2", "samtools", "bcftools", "bgzip", "tabix")
PBSIM_MODEL = Path("/usr/share/pbsim/models/model_qc_clr")
SAMPLE = "NA00001"
FLANK = 3_000  # bases of reference sequence either side of the simulated variants
MIN_DEPTH = 5  # bcftools gVCF blocks: minimum per-sample depth to enter a block
CALLABLE_DEPTH = 10  # reads for a position to count as callable in callable.bed


@dataclass(frozen=True)
class ReadCalls:
    """Where the made files live, and the truth at the panel's sites."""

    root: Path
    panel: Path
    reference: Path
    bam: Path
    variant_vcf: Path
    gvcf: Path
    forced_vcf: Path
    callable_bed: Path  # positions with >= CALLABLE_DEPTH reads (samtools depth), merged
    truth: np.ndarray  # float32 [panel sites]: copies of the panel ALT in the true genotype
    uncovered: np.ndarray  # bool [panel sites]: inside the window no read was drawn from


def missing_tools() -> list[str]:
    """The command-line tools this script needs and cannot find."""
    return [t for t in TOOLS if shutil.which(t) is None] + (
        [str(PBSIM_MODEL)] if not PBSIM_MODEL.exists() else [])


def make_read_calls(out: Path, *, seed: int = 5, variants: int = 400, panel_size: int = 160,
                    depth: float = 24.0) -> ReadCalls:
    """Simulate, read, align and call one individual under `out`; return paths and truth."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cohort = build_cohort(SimParams(devices=1, samples_per_device=1, variants=variants,
                                    panel_size=panel_size, seed=seed, test_samples=0,
                                    reference_samples=60, missing_rate=0.0, chromosomes=(22,),
                                    ancestry={"EUR": 1.0}))  # one European genome: an
    # African one carries ~3x the SNPs, and bcftools then miscalled 2 of its 53 ALT sites
    hap = cohort.devices[0].haplotypes[:, 0, :]  # int8 [variants, 2]
    positions = cohort.positions
    lo, hi = int(positions[0]) - FLANK, int(positions[-1]) + FLANK
    # The reference: N everywhere (so the contig has GRCh38 chr22's length) but the region.
    region = rng.choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=hi - lo + 1)
    offsets = positions - lo
    region[offsets] = np.frombuffer("".join(cohort.ref).encode(), dtype=np.uint8)
    reference = out / "ref.fa"
    _write_reference(reference, lo, region)
    run(["samtools", "faidx", str(reference)])
    # Reads: none from a window holding about a tenth of the panel.
    panel_pos = positions[cohort.panel_index]
    k = len(panel_pos)
    gap = (int(panel_pos[k // 2]) - 50, int(panel_pos[k // 2 + k // 10]) + 50)
    alt_bytes = np.frombuffer("".join(cohort.alt).encode(), dtype=np.uint8)
    fastq = out / "reads.fq"
    with fastq.open("wb") as fq:
        for h in (0, 1):
            seq = region.copy()
            carried = hap[:, h] == 1
            seq[offsets[carried]] = alt_bytes[carried]
            pieces = [(lo, gap[0] - 1), (gap[1] + 1, hi)]
            fasta = out / f"hap{h}.fa"
            fasta.write_text("".join(f">hap{h}_{a}\n{seq[a - lo:b - lo + 1].tobytes().decode()}\n"
                                     for a, b in pieces))
            _pbsim(fasta, out / f"hap{h}", depth / 2, seed * 10 + h)
            for j in range(len(pieces)):
                fq.write(_renamed(out / f"hap{h}_{j + 1:04d}.fastq", f"h{h}p{j}_"))
    bam = out / "sample.bam"
    align = subprocess.Popen(["minimap2", "-ax", "map-ont", "-t", "2", "--secondary=no",
                              "-R", f"@RG\\tID:rg1\\tSM:{SAMPLE}", str(reference), str(fastq)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    run(["samtools", "sort", "-o", str(bam), "-"], stdin=align.stdout)
    if align.wait() != 0:
        raise RuntimeError("minimap2 failed")
    run(["samtools", "index", str(bam)])
    panel_path = out / "panel.tsv"
    panel_path.write_text(cohort.panel.to_tsv())
    where = f"{CONTIG}:{lo}-{hi}"
    pileup = ["bcftools", "mpileup", "-X", "ont", "-f", str(reference), "-r", where,
              "-a", "FORMAT/AD,FORMAT/DP"]
    variant_vcf = _call(out / "variant.vcf.gz", [*pileup, str(bam)], ["-mv"])
    gvcf = _call(out / "calls.g.vcf.gz", [*pileup, "-g", str(MIN_DEPTH), str(bam)],
                 ["-m", "-g", str(MIN_DEPTH)])
    alleles = out / "panel_alleles.tsv.gz"
    _alleles_file(cohort.panel, alleles)
    forced_vcf = _call(out / "forced.vcf.gz", [*pileup, "-T", str(alleles), str(bam)],
                       ["-m", "-C", "alleles", "-T", str(alleles)])
    callable_bed = _callable(bam, where, out / "callable.bed")
    truth = hap[cohort.panel_index].sum(axis=1).astype(np.float32)
    uncovered = (panel_pos >= gap[0]) & (panel_pos <= gap[1])
    (out / "truth.json").write_text(json.dumps({
        "sample": SAMPLE, "region": where, "uncovered": list(gap), "depth": depth,
        "truth": {s.id: float(t) for s, t in zip(cohort.panel.sites, truth, strict=True)}},
        indent=1) + "\n")
    return ReadCalls(root=out, panel=panel_path, reference=reference, bam=bam,
                     variant_vcf=variant_vcf, gvcf=gvcf, forced_vcf=forced_vcf,
                     callable_bed=callable_bed, truth=truth,
                     uncovered=uncovered)


def run(cmd: list[str], **kw: object) -> None:
    """Run a tool; its stderr is shown only when it fails."""
    done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")


def _write_reference(path: Path, lo: int, region: np.ndarray) -> None:
    """chr22 as FASTA: N up to `lo`, the region, N to the end (60 bases a line)."""
    seq = np.full(CONTIG_LENGTH, ord("N"), dtype=np.uint8)
    seq[lo - 1:lo - 1 + len(region)] = region
    width = 60
    full = len(seq) // width * width
    body = np.concatenate([seq[:full].reshape(-1, width),
                           np.full((full // width, 1), ord("\n"), dtype=np.uint8)], axis=1)
    with path.open("wb") as f:
        f.write(f">{CONTIG}\n".encode())
        f.write(body.tobytes())
        if full < len(seq):
            f.write(seq[full:].tobytes() + b"\n")


def _pbsim(fasta: Path, prefix: Path, depth: float, seed: int) -> None:
    """PBSIM's CLR model with nanopore-like accuracy (~95%) and read lengths (mean 6 kb)."""
    run(["pbsim", "--data-type", "CLR", "--model_qc", str(PBSIM_MODEL), "--depth", str(depth),
         "--length-mean", "6000", "--length-sd", "3000", "--length-min", "1000",
         "--accuracy-mean", "0.95", "--accuracy-sd", "0.02", "--accuracy-min", "0.90",
         "--difference-ratio", "23:31:46", "--seed", str(seed), "--prefix", str(prefix),
         str(fasta)])


def _renamed(fastq: Path, prefix: str) -> bytes:
    """PBSIM's reads with a prefix on every name, so the two haplotypes' reads stay apart."""
    lines = fastq.read_bytes().split(b"\n")
    for i in range(0, len(lines) - 1, 4):
        lines[i] = b"@" + prefix.encode() + lines[i][1:]
    return b"\n".join(lines)


def _call(out: Path, pileup: list[str], call: list[str]) -> Path:
    """bcftools mpileup | bcftools call, bgzipped and indexed."""
    mp = subprocess.Popen([*pileup, "-Ou"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    run(["bcftools", "call", *call, "-Oz", "-o", str(out)], stdin=mp.stdout)
    if mp.wait() != 0:
        raise RuntimeError(f"{' '.join(pileup)} failed")
    run(["tabix", "-f", "-p", "vcf", str(out)])
    return out


def _callable(bam: Path, where: str, out: Path) -> Path:
    """A BED of the positions `samtools depth` finds CALLABLE_DEPTH or more reads at."""
    done = subprocess.run(["samtools", "depth", "-r", where, str(bam)], capture_output=True,
                          text=True, check=True)
    runs: list[list[object]] = []
    for line in done.stdout.splitlines():
        chrom, pos_s, depth = line.split("\t")
        pos = int(pos_s)
        if int(depth) < CALLABLE_DEPTH:
            continue
        if runs and runs[-1][0] == chrom and runs[-1][2] == pos - 1:
            runs[-1][2] = pos
        else:
            runs.append([chrom, pos - 1, pos])
    out.write_text("".join(f"{c}\t{a}\t{b}\n" for c, a, b in runs))
    return out


def _alleles_file(panel: Panel, path: Path) -> None:
    """The panel as the tab-separated CHROM POS REF,ALT file `call -C alleles -T` takes."""
    text = "".join(f"{s.chrom}\t{s.pos}\t{s.ref},{s.alt}\n" for s in panel.sites)
    plain = path.with_suffix("")
    plain.write_text(text)
    run(["bgzip", "-f", str(plain)])
    run(["tabix", "-f", "-s1", "-b2", "-e2", str(path)])


if __name__ == "__main__":
    made = make_read_calls(Path(sys.argv[1]))
    print(f"{made.root}: {len(made.truth)} panel sites, {int(made.uncovered.sum())} uncovered")

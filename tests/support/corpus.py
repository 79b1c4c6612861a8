"""The reader's corpus of real public files and its two oracles.

Files: the VCFs Debian's python-pyvcf-examples ships (1000 Genomes, GATK, freebayes, samtools,
VarScan, GoNL, Strelka... as released), and the PGS Catalog's test scoring files from the
pgscatalog-core 1.1.1 source distribution (`make corpus` downloads it into build/corpus).

Oracles: bcftools (`norm -m-` then `query`) for genotypes, and plink2 `--score` run the way
pgsc_calc runs it (modules/local/plink2_vcf.nf and plink2_score.nf): the VCF made a pfile with
`--set-all-var-ids @:#:$r:$a --max-alleles 2 --new-id-max-allele-len 100 missing` (its
conf/modules.config), scored with
`header-read cols=+scoresums,+denom,-fid list-variants` and `no-mean-imputation` below 50
samples.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pysam

PYVCF_DIR = Path("/usr/share/doc/python3-vcf/test")
REPO = Path(__file__).resolve().parents[2]
PGS_SDIST = "pgscatalog-core==1.1.1"
VA_DEB = "r-bioc-variantannotation"
VA_TREE = "variantannotation/usr/lib/R/site-library/VariantAnnotation"
Key = tuple[str, int, str, str]
_BASES = frozenset("ACGT")


def corpus_dir() -> Path | None:
    """The PGS Catalog test data: GENOFED_CORPUS, else build/corpus (made by `make corpus`),
    downloaded here with pip if neither exists; None if the registry cannot be reached."""
    root = Path(os.environ.get("GENOFED_CORPUS", REPO / "build" / "corpus"))
    if (root / "data").is_dir():
        return root / "data"
    root.mkdir(parents=True, exist_ok=True)
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                          "--no-deps", PGS_SDIST, "-d", str(root)], capture_output=True)
    sdists = sorted(root.glob("pgscatalog_core-*.tar.gz"))
    if got.returncode != 0 or not sdists:
        return None
    subprocess.run(["tar", "-xzf", str(sdists[0]), "-C", str(root), "--strip-components=2",
                    "--wildcards", "*/tests/data/*"], check=True)
    return root / "data"


def variantannotation_dir() -> Path | None:
    """The VCFs of Debian's r-bioc-variantannotation (extdata/, unitTests/cases/), unpacked
    from its .deb by `make corpus` (or here, with apt-get download); None if apt cannot."""
    root = Path(os.environ.get("GENOFED_CORPUS", REPO / "build" / "corpus"))
    tree = root / VA_TREE
    if tree.is_dir():
        return tree
    root.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", "-q", VA_DEB], cwd=root, capture_output=True)
    debs = sorted(root.glob(f"{VA_DEB}_*.deb"))
    if got.returncode != 0 or not debs:
        return None
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root / "variantannotation")],
                   check=True)
    return tree if tree.is_dir() else None


def prepare(src: Path, out: Path) -> Path:
    """A bgzipped, tabix-indexed copy of a VCF as released: plain text is bgzipped, plain
    gzip recompressed (the refusal's own advice, `zcat | bgzip`), BGZF copied as is."""
    with src.open("rb") as f:
        magic = f.read(4)
    dst = out / (src.name.removesuffix(".gz").removesuffix(".vcf") + ".vcf.gz")
    if magic[:2] != b"\x1f\x8b":
        pysam.tabix_compress(str(src), str(dst), force=True)
    elif magic[3:4] == b"\x04":  # gzip with extra fields: BGZF
        shutil.copy(src, dst)
    else:
        plain = out / (dst.name + ".txt")
        with gzip.open(src, "rb") as f, plain.open("wb") as g:
            shutil.copyfileobj(f, g)
        pysam.tabix_compress(str(plain), str(dst), force=True)
        plain.unlink()
    pysam.tabix_index(str(dst), preset="vcf", force=True)
    return dst


def record_sites(vcf: Path, build_lengths: dict[str, int]) -> list[Key]:
    """Every (chrom, pos, REF, ALT) a file's records list that a panel may hold (ACGT alleles
    on a chromosome of the build), once; keys listed by two records are left out."""
    seen: dict[Key, int] = {}
    with pysam.VariantFile(str(vcf)) as vf:
        for rec in vf:
            norm = rec.chrom.removeprefix("chr")
            if norm not in build_lengths or rec.pos > build_lengths[norm]:
                continue
            ref = rec.ref.upper()
            for alt in (a.upper() for a in rec.alts or ()):
                if set(ref) <= _BASES and set(alt) <= _BASES and alt != ref:
                    key = (rec.chrom, rec.pos, ref, alt)
                    seen[key] = seen.get(key, 0) + 1
    return [k for k, n in seen.items() if n == 1]


def bcftools_genotypes(vcf: Path) -> dict[Key, tuple[str, list[str], list[str], int]]:
    """(FILTER, GTs, FTs, allele index) per (chrom, pos, REF, ALT) as `bcftools query` prints
    them, the first record of each key. (`bcftools norm -m-` would split multi-allelics the
    same way, but its writer stops on a FILTER the header does not declare.)"""
    with pysam.VariantFile(str(vcf)) as vf:
        has_ft = "FT" in vf.header.formats
    fmt = "%CHROM\t%POS\t%REF\t%ALT\t%FILTER[\t%GT]" + ("[\t%FT]" if has_ft else "") + "\n"
    query = subprocess.run(["bcftools", "query", "-f", fmt, str(vcf)], check=True,
                           capture_output=True, text=True).stdout
    out: dict[Key, tuple[str, list[str], list[str], int]] = {}
    for line in query.splitlines():
        chrom, pos, ref, alts, filt, *calls = line.split("\t")
        n = len(calls) // 2 if has_ft else len(calls)
        for index, alt in enumerate(alts.split(","), 1):
            key = (chrom, int(pos), ref.upper(), alt.upper())
            out.setdefault(key, (filt, calls[:n], calls[n:] if has_ft else [], index))
    return out


def oracle_dosage(filt: str, gt: str, ft: str | None, index: int) -> float:
    """bcftools's genotype under genofed's rules: FILTER not PASS/. [12] and FORMAT/FT not
    PASS/. [21] are missing, a call with a missing allele (`./.`, `0/.`) is missing [14], else
    the copies of allele `index` (as `bcftools norm -m-` would count them [15]; 0 or 1 for a
    haploid call [18])."""
    if filt not in ("PASS", "."):
        return math.nan
    if ft is not None and any(f not in ("PASS", ".", "") for f in ft.split(";")):
        return math.nan
    alleles = gt.replace("|", "/").split("/")
    if any(a == "." for a in alleles):
        return math.nan
    return float(sum(a == str(index) for a in alleles))


def plink2_pfile(vcf: Path, out: Path) -> Path:
    """pgsc_calc's PLINK2_VCF step; half calls set missing (genofed's rule 14; plink2 stops on
    them by default, as pgsc_calc does)."""
    prefix = out / "vcf_pfile"
    subprocess.run(["plink2", "--threads", "1", "--memory", "1024", "--set-all-var-ids",
                    "@:#:$r:$a", "--max-alleles", "2", "--new-id-max-allele-len", "100",
                    "missing", "--vcf-half-call", "missing", "--vcf", str(vcf), "--make-pgen",
                    "--out", str(prefix)], check=True, capture_output=True)
    return prefix


def plink2_score(pfile: Path, rows: Sequence[tuple[str, str, float]], n_samples: int,
                 out: Path) -> list[float]:
    """pgsc_calc's PLINK2_SCORE step on (variant ID, effect allele, weight) rows: SCORE_SUM
    per sample, in the VCF's order (plink2 cuts sample IDs at a space, so not by ID)."""
    scorefile = out / "scorefile.txt"
    scorefile.write_text("ID\teffect_allele\tscore\n"
                         + "".join(f"{i}\t{a}\t{w!r}\n" for i, a, w in rows))
    args = ["header-read", "cols=+scoresums,+denom,-fid", "list-variants"]
    if n_samples < 50:
        args.append("no-mean-imputation")
    subprocess.run(["plink2", "--threads", "1", "--memory", "1024", "--seed", "31", "--score",
                    str(scorefile), *args, "--pfile", str(pfile), "--out", str(out / "score")],
                   check=True, capture_output=True)
    lines = (out / "score.sscore").read_text().splitlines()
    col = lines[0].split("\t")
    return [float(ln.split("\t")[col.index("score_SUM")]) for ln in lines[1:]]


def plink2_counts(pfile: Path, rows: Sequence[tuple[str, str, float]], out: Path
                  ) -> list[dict[str, float]]:
    """Copies of each row's effect allele per sample from plink2's own genotypes (`--export A`
    counting that allele): exact integers, where `--score` prints six significant digits."""
    (out / "ids.txt").write_text("".join(f"{i}\n" for i, _, _ in rows))
    (out / "alleles.txt").write_text("".join(f"{i}\t{a}\n" for i, a, _ in rows))
    subprocess.run(["plink2", "--threads", "1", "--memory", "1024", "--pfile", str(pfile),
                    "--extract", str(out / "ids.txt"), "--export", "A", "--export-allele",
                    str(out / "alleles.txt"), "--out", str(out / "counts")],
                   check=True, capture_output=True)
    lines = (out / "counts.raw").read_text().splitlines()
    col = lines[0].split("\t")
    ids = [c.rsplit("_", 1)[0] for c in col[6:]]
    return [{v: (math.nan if x == "NA" else float(x))
             for v, x in zip(ids, line.split("\t")[6:], strict=True)} for line in lines[1:]]

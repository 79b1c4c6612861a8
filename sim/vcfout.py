"""Writing a group's simulated calls: phased GT, one contig per chromosome window, BGZF
compressed as it is written (pysam's BGZFile, htslib underneath) and tabix-indexed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam
from pysam.libcbgzf import BGZFile

from genofed.sim.engine import Sites
from genofed.sim.genome import BUILD, contig_length

# Genotype code (2 * first + second haplotype, + 4 when written as missing) -> "a|b\t".
_GT_BYTES = np.frombuffer(b"0|0\t0|1\t1|0\t1|1\t" + b"./.\t" * 4, dtype=np.uint8).reshape(8, 4)
_CHUNK = 2048  # records formatted at a time


def header(sites: Sites, samples: tuple[str, ...]) -> bytes:
    contigs = dict.fromkeys(sites.contigs)
    lines = [
        "##fileformat=VCFv4.2",
        "##source=genofed.sim",
        f"##reference={BUILD}",
        *(f"##contig=<ID={c},length={contig_length(int(c[3:]))},assembly={BUILD}>"
          for c in contigs),
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                   *samples]),
    ]
    return ("\n".join(lines) + "\n").encode()


def prefixes(sites: Sites) -> list[bytes]:
    """The fixed columns of every record, up to and including FORMAT's tab."""
    return [f"{c}\t{p}\t{c}_{p}_{r}_{a}\t{r}\t{a}\t.\tPASS\t.\tGT\t".encode()
            for c, p, r, a in zip(sites.contigs, sites.positions, sites.ref, sites.alt,
                                  strict=True)]


def write_vcf(path: Path, sites: Sites, samples: tuple[str, ...], codes: np.ndarray,
              fixed: list[bytes] | None = None) -> Path:
    """Write codes [samples, sites] as `path` (.vcf.gz) with its .tbi; returns `path`."""
    fixed = fixed if fixed is not None else prefixes(sites)
    with BGZFile(str(path), "wb", index=None) as f:
        f.write(header(sites, samples))
        for lo in range(0, len(fixed), _CHUNK):
            body = _GT_BYTES[codes[:, lo:lo + _CHUNK].T]  # [chunk, samples, 4]
            body[:, -1, 3] = ord("\n")
            rows = body.reshape(body.shape[0], -1)
            f.write(b"".join(x for pair in zip(fixed[lo:lo + _CHUNK], rows, strict=True)
                             for x in (pair[0], pair[1].tobytes())))
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path

"""Every broken input gives exit status 1 and one line naming the file and the problem, with
no traceback (through the real `genofed features` command); the near-misses still read."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_genofed
from support.vcftools import to_bcf, vcf_text, write_vcf

SAMPLES = ("S1", "S2")
PANEL = "#genome_build=GRCh38\nchrom\tpos\tref\talt\tid\taf\nchr22\t100\tA\tG\ta\t0.2\n"
GOOD = [["chr22", 100, ".", "A", "G", ".", "PASS", ".", "GT", "0/1", "1/1"]]


def _big_rows(n: int = 3000) -> list[list[object]]:
    rng = np.random.default_rng(5)
    return [["chr22", 100 + k, ".", "A", "G", ".", "PASS", ".", "GT",
             *(f"{rng.integers(0, 2)}|{rng.integers(0, 2)}" for _ in SAMPLES)]
            for k in range(n)]


def _truncated(d: Path, name: str) -> Path:
    whole = d / f"whole-{name}"
    if name.endswith(".bcf"):
        to_bcf(write_vcf(d / "whole.vcf.gz", vcf_text(_big_rows(), SAMPLES), index=False),
               whole, index=False)
    else:
        write_vcf(whole, vcf_text(_big_rows(), SAMPLES), index=False)
    cut = d / name
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _make(d: Path, kind: str) -> tuple[Path, Path]:
    """(vcf, panel) for one broken kind."""
    panel = d / "panel.tsv"
    panel.write_text(PANEL)
    if kind == "truncated_bgzip":
        return _truncated(d, "cut.vcf.gz"), panel
    if kind == "truncated_bcf":
        return _truncated(d, "cut.bcf"), panel
    if kind == "wrong_build":
        return write_vcf(d / "b37.vcf.gz", vcf_text(GOOD, SAMPLES,
                                                     contigs=[("chr22", 51_304_566)])), panel
    if kind == "missing_gt":
        rows = [["chr22", 100, ".", "A", "G", ".", "PASS", ".", "DP", "3", "4"]]
        return write_vcf(d / "nogt.vcf.gz", vcf_text(rows, SAMPLES, formats=["DP"])), panel
    if kind == "build_named_other":  # no contig lengths; ##reference says GRCh37
        text = vcf_text(GOOD, SAMPLES, contigs=()).replace(
            "##fileformat=VCFv4.2\n", "##fileformat=VCFv4.2\n##reference=file:///r/hs37d5.fa\n")
        return write_vcf(d / "hs37d5.vcf.gz", text), panel
    if kind == "past_contig_end":  # no contig lengths; a GRCh37 position past GRCh38's end
        rows = [*GOOD, ["chr22", 51_000_000, ".", "A", "G", ".", "PASS", ".", "GT", "0/1", "1/1"]]
        return write_vcf(d / "b37.vcf.gz", vcf_text(rows, SAMPLES, contigs=())), panel
    if kind == "gt_unreadable":  # GT not first, and not a genotype
        rows = [["chr22", 100, ".", "A", "G", ".", "PASS", ".", "GQ:GT", "9:0/3", "9:1/1"]]
        return write_vcf(d / "gt.vcf.gz", vcf_text(rows, SAMPLES, formats=["GQ", "GT"])), panel
    if kind in ("panel_past_end", "panel_unknown_contig"):
        site = "chr22\t60000000" if kind == "panel_past_end" else "chrUn_KI270742v1\t100"
        panel.write_text(PANEL + f"{site}\tC\tT\tb\t0.2\n")
        return write_vcf(d / "ok.vcf.gz", vcf_text(GOOD, SAMPLES)), panel
    if kind == "empty_file":
        (d / "empty.vcf.gz").write_bytes(b"")
        return d / "empty.vcf.gz", panel
    if kind == "not_a_vcf":
        (d / "notes.vcf").write_text("these are not calls\n")
        return d / "notes.vcf", panel
    if kind == "truncated_plain_gzip":  # plain gzip is read through a pipe; cut, it refuses
        data = gzip.compress(vcf_text(_big_rows(), SAMPLES).encode())
        (d / "gz.vcf.gz").write_bytes(data[: len(data) // 2])
        return d / "gz.vcf.gz", panel
    if kind == "no_samples":
        return write_vcf(d / "sites.vcf.gz", vcf_text([GOOD[0][:8]], [])), panel
    if kind == "missing_file":
        return d / "absent.vcf.gz", panel
    if kind == "duplicate_panel_site":
        panel.write_text(PANEL + "chr22\t100\tA\tG\tb\t0.2\n")
        return write_vcf(d / "ok.vcf.gz", vcf_text(GOOD, SAMPLES)), panel
    raise AssertionError(kind)


BROKEN = {  # kind: (words in the message, which file it names)
    "truncated_bgzip": ("truncated", "vcf"),
    "truncated_bcf": ("truncated", "vcf"),
    "wrong_build": ("length 51304566, the GRCh37 length", "vcf"),
    "missing_gt": ("no GT", "vcf"),
    "build_named_other": ("'##reference=file:///r/hs37d5.fa' names GRCh37", "vcf"),
    "past_contig_end": (":chr22:51000000: a record past the end of chr22 in GRCh38", "vcf"),
    "gt_unreadable": (":chr22:100: cannot read GT '0/3' (FORMAT key 2, GT not first)", "vcf"),
    "panel_past_end": (":4: position chr22:60000000 is past the end of chr22", "panel"),
    "panel_unknown_contig": (":4: contig chrUn_KI270742v1 is not a chromosome of GRCh38",
                             "panel"),
    "empty_file": ("file is empty", "vcf"),
    "not_a_vcf": ("not a VCF/BCF", "vcf"),
    "truncated_plain_gzip": ("truncated", "vcf"),
    "no_samples": ("no samples", "vcf"),
    "missing_file": ("not found", "vcf"),
    "duplicate_panel_site": (":4: duplicate site chr22:100 A>G", "panel"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_input_is_one_line(tmp_path: Path, kind: str) -> None:
    vcf, panel = _make(tmp_path, kind)
    words, names = BROKEN[kind]
    done = run_genofed("features", "--panel", str(panel), "--vcf", str(vcf),
                       "-o", str(tmp_path / "out.npz"))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"genofed: {vcf if names == 'vcf' else panel}")
    assert words in lines[0]
    assert "Traceback" not in done.stderr and not done.stdout
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("index", ["csi", "none", "foreign", "stale"])
def test_bcf_with_and_without_index(tmp_path: Path, index: str) -> None:
    panel = tmp_path / "panel.tsv"
    panel.write_text(PANEL)
    gz = write_vcf(tmp_path / "c.vcf.gz", vcf_text(GOOD, SAMPLES))
    bcf = to_bcf(gz, tmp_path / "c.bcf", index=index != "none")
    if index == "foreign":  # an index made for another file, newer than this one
        contigs = [(f"chr{k}", 1_000_000 * k) for k in range(1, 22)] + [("chr22", 50_818_468)]
        other = to_bcf(write_vcf(tmp_path / "o.vcf.gz",
                                 vcf_text(_big_rows(), SAMPLES, contigs=contigs)),
                       tmp_path / "o.bcf")
        shutil.copy(other.with_name("o.bcf.csi"), tmp_path / "c.bcf.csi")
    if index == "stale":
        bcf.touch()
        csi = tmp_path / "c.bcf.csi"
        import os

        os.utime(csi, (csi.stat().st_atime, bcf.stat().st_mtime - 60))
    out = tmp_path / "out.npz"
    done = run_genofed("features", "--panel", str(panel), "--vcf", str(bcf), "-o", str(out),
                       "--access", "region")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    if index in ("foreign", "stale"):
        assert "index" in done.stderr  # warned that the index was not used
    from genofed.agent.vcf import load_npz

    d = load_npz(out)
    np.testing.assert_array_equal(d.dosage[:, 0], [1, 2])
    assert d.report["access"] == ("region" if index == "csi" else "stream")


def test_refusal_below_the_match_rate_still_writes_the_report(tmp_path: Path) -> None:
    panel = tmp_path / "panel.tsv"
    panel.write_text(PANEL + "chr22\t200\tC\tT\tb\t0.2\n")
    vcf = write_vcf(tmp_path / "half.vcf.gz", vcf_text(GOOD, SAMPLES))
    report = tmp_path / "report.json"
    done = run_genofed("features", "--panel", str(panel), "--vcf", str(vcf),
                       "-o", str(tmp_path / "o.npz"), "--report", str(report))
    assert done.returncode == 1
    assert "match rate 0.500 is below the minimum 0.750" in done.stderr
    assert "1 absent" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    import json

    r = json.loads(report.read_text())
    assert r["match_rate"] == 0.5 and r["missing"]["absent"] == 1
    ok = run_genofed("features", "--panel", str(panel), "--vcf", str(vcf),
                     "-o", str(tmp_path / "o.npz"), "--min-match-rate", "0.5")
    assert ok.returncode == 0, ok.stderr

"""The panel loader: a valid file round-trips; every bad file gives one line naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genofed.errors import GenofedError
from genofed.models.panel import Panel, Site, load_panel

HEADER = "#genome_build=GRCh38\nchrom\tpos\tref\talt\tid\taf\n"
GOOD = HEADER + "chr22\t100\tA\tG\trs1\t0.25\nchr22\t200\tc\tt\trs2\t0.5\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "panel.tsv"
    p.write_text(text)
    return p


def test_load_valid_panel(tmp_path: Path) -> None:
    panel = load_panel(write(tmp_path, GOOD))
    assert panel.build == "GRCh38"
    assert len(panel) == 2
    assert panel.ids == ["rs1", "rs2"]
    assert panel.sites[1] == Site(chrom="chr22", pos=200, ref="C", alt="T", id="rs2", af=0.5)
    np.testing.assert_array_equal(panel.af, [0.25, 0.5])


def test_round_trip_and_hash(tmp_path: Path) -> None:
    panel = load_panel(write(tmp_path, GOOD))
    again = load_panel(write(tmp_path, panel.to_tsv()))
    assert again == panel
    assert again.sha256() == panel.sha256()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="panel file not found") as info:
        load_panel(tmp_path / "absent.tsv")
    assert "absent.tsv" in str(info.value)


@pytest.mark.parametrize(("text", "words"), [
    ("", ":1: panel must start with '#genome_build="),
    ("chrom\tpos\tref\talt\tid\taf\n", ":1: panel must start"),
    ("#genome_build=GRCh38\n", ":2: panel header"),
    ("#genome_build=GRCh38\nchrom pos ref alt id af\n", ":2: panel header"),
    ("#genome_build=GRCh38\nchrom\tpos\tref\talt\taf\tid\n", ":2: panel header"),
    ("#genome_build=hg19\nchrom\tpos\tref\talt\tid\taf\nchr1\t5\tA\tG\tx\t0.1\n",
     "unknown genome build 'hg19'"),
    (HEADER, "no sites"),
    (HEADER + "chr22\t100\tA\tG\trs1\n", ":3: expected 6 tab-separated fields, got 5"),
    (HEADER + "chr22\tten\tA\tG\trs1\t0.1\n", ":3: pos must be an integer"),
    (HEADER + "chr22\t0\tA\tG\trs1\t0.1\n", ":3: pos must be >= 1"),
    (HEADER + "chr22\t100\tA\tG\trs1\tabc\n", ":3: .*af a number"),
    (HEADER + "chr22\t100\tA\tG\trs1\t0\n", ":3: af must lie strictly between 0 and 1"),
    (HEADER + "chr22\t100\tA\tG\trs1\t1\n", ":3: af must lie strictly between 0 and 1"),
    (HEADER + "chr22\t100\tA\tG\trs1\t1.5\n", ":3: af must lie strictly between 0 and 1"),
    (HEADER + "chr22\t100\tA\tG\trs1\tnan\n", ":3: af must lie strictly between 0 and 1"),
    (HEADER + "chr22\t100\tA\t<DEL>\trs1\t0.1\n", ":3: alt allele '<DEL>' is not"),
    (HEADER + "chr22\t100\t\tG\trs1\t0.1\n", ":3: ref allele '' is not"),
    (HEADER + "chr22\t100\tA\ta\trs1\t0.1\n", ":3: ref and alt are the same"),
    (HEADER + "chr22\t100\tA\tG\trs1\t0.1\nchr22\t101\tA\tG\trs2\t0.1\n"
     "chr22\t100\tA\tG\trs3\t0.2\n", ":5: duplicate site chr22:100 A>G \\(first at line 3\\)"),
])
def test_bad_panel(tmp_path: Path, text: str, words: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(GenofedError, match=words) as info:
        load_panel(p)
    message = str(info.value)
    assert message.startswith(str(p))
    assert "\n" not in message


def test_same_position_other_allele_is_not_a_duplicate(tmp_path: Path) -> None:
    panel = load_panel(write(tmp_path, HEADER + "chr22\t100\tA\tG\ta\t0.1\n"
                                                "chr22\t100\tA\tT\tb\t0.2\n"))
    assert len(panel) == 2


def test_panel_needs_sites_and_known_build() -> None:
    with pytest.raises(GenofedError, match="no sites"):
        Panel(build="GRCh38", sites=())
    with pytest.raises(GenofedError, match="unknown genome build"):
        Panel(build="hg38", sites=(Site("chr1", 1, "A", "G", "x", 0.1),))

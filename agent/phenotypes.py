"""Phenotype files: `sample<TAB>phenotype` with a header line, labels 0 (control) or 1 (case)."""

from __future__ import annotations

from pathlib import Path

from genofed.errors import LocalInputError, read_user_text

HEADER = ("sample", "phenotype")


def read_phenotypes(path: str | Path) -> dict[str, int]:
    """Read a phenotype TSV into {sample: 0 or 1}; every error names the file and line."""
    p = Path(path)
    text = read_user_text(p, "phenotype file")
    lines = text.splitlines()
    if not lines or tuple(lines[0].rstrip("\r").split("\t")) != HEADER:
        raise LocalInputError(f"{p}:1: phenotype file must start with the header line "
                              f"'sample<TAB>phenotype'")
    labels: dict[str, int] = {}
    first: dict[str, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise LocalInputError(f"{p}:{lineno}: expected 2 tab-separated fields, "
                                  f"got {len(fields)}")
        sample, value = fields[0].strip(), fields[1].strip()
        if not sample:
            raise LocalInputError(f"{p}:{lineno}: empty sample name")
        if value not in ("0", "1"):
            raise LocalInputError(f"{p}:{lineno}: phenotype of {sample} must be 0 or 1, "
                                  f"got {value!r}")
        if sample in labels:
            raise LocalInputError(f"{p}:{lineno}: duplicate sample {sample} "
                                  f"(first at line {first[sample]})")
        labels[sample] = int(value)
        first[sample] = lineno
    if not labels:
        raise LocalInputError(f"{p}: phenotype file has no samples")
    return labels

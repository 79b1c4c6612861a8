"""`cohort.json`: what was simulated, for people and for the tools that read a cohort."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from genofed.sim import demography as dem
from genofed.sim.genome import BUILD
from genofed.sim.windows import MIN_PANEL_MAF

if TYPE_CHECKING:
    from genofed.sim.cohort import CohortInfo
    from genofed.sim.engine import RunResult
    from genofed.sim.params import SimParams


def manifest_json(p: SimParams, r: RunResult, info: CohortInfo,
                  groups: list[tuple[str, tuple[str, ...], int, int]]) -> str:
    root = info.root

    def describe(name: str, lo: int, hi: int, vcf: object, pheno: object) -> dict[str, object]:
        counts = np.bincount(r.ancestry[lo:hi], minlength=len(dem.ANCESTRIES))
        return {"id": name, "vcf": str(vcf.relative_to(root)),  # type: ignore[attr-defined]
                "phenotypes": str(pheno.relative_to(root)),  # type: ignore[attr-defined]
                "samples": hi - lo, "cases": int(r.phenotype[lo:hi].sum()),
                "population_counts": dict(zip(dem.ANCESTRIES, map(int, counts), strict=True))}

    phe = np.arange(p.n_phenotyped)
    ids = r.sites.ids
    devs = [describe(n, lo, hi, v, ph) for (n, _, lo, hi), v, ph in
            zip(groups[:-1], info.device_vcfs, info.device_phenotypes, strict=True)]
    doc = {
        "format": "genofed-cohort/2",
        "build": BUILD,
        "params": asdict(p),
        "model": {
            "demography": "AmericanAdmixture_4B18 (Browning et al. 2018; stdpopsim HomSap)",
            "ancestries": list(dem.ANCESTRIES), "admixture": dict(zip(
                dem.SOURCES, dem.ADMIXTURE, strict=True)),
            "mutation_rate": dem.MUTATION_RATE, "min_panel_maf": MIN_PANEL_MAF,
            "windows": [{"contig": w.contig, "start": w.start + 1, "length": n,
                         "recombination_rate": w.recombination_rate, "panel": w.panel,
                         "variants": w.variants, "causal": w.causal}
                        for w, n in zip(r.windows, r.window_lengths, strict=True)],
        },
        "score": str(info.score.relative_to(root)) if info.score else None,
        "variants": info.variants,
        "panel": str(info.panel.relative_to(root)),
        "panel_size": info.panel_size,
        "meff": {"value": r.meff, "estimator": "Li and Ji 2005, eigenvalues of the panel's "
                 "correlation matrix per chromosome window, summed",
                 "genomes": min(p.n_phenotyped, 2000)},
        "trait": {
            "heritability_realized": float(r.genetic[phe].var() / r.liability[phe].var()),
            "prevalence_realized": float(r.phenotype[phe].mean()),
            "causal_sites": len(r.causal),
        },
        "causal_sites": [ids[i] for i in r.causal],
        "causal_effects": {a: [round(float(x), 6) for x in r.effects[:, k]]
                           for k, a in enumerate(dem.ANCESTRIES)},
        "devices": devs,
        "test": describe("test", groups[-1][2], groups[-1][3], info.test_vcf,
                         info.test_phenotypes),
    }
    return json.dumps(doc, indent=2) + "\n"

"""The report of one read [19]: panel sites matched by kind and evidence, missing by reason,
per-genotype reasons, ploidy, match rate. Computed from an Extraction's arrays, no I/O."""

from __future__ import annotations

from typing import Any

import numpy as np

from genofed.agent import genotype as g
from genofed.agent.contigs import in_par
from genofed.agent.extract import (
    EVIDENCE,
    N_ALT_READS,
    N_INDEL,
    N_LOW_DEPTH,
    N_NOT_CALLABLE,
    N_REF_UNKNOWN,
    N_UNNORMALIZED,
    S_BED,
    S_FILTERED,
    S_MISMATCH,
    Extraction,
)


def extraction_report(ex: Extraction, **extra: Any) -> dict[str, Any]:
    """Counts per kind and per missing reason [19]; `extra` is merged in."""
    n = len(ex.sites)
    observed = ~np.isnan(ex.dosage)
    used = np.asarray(observed.any(axis=0), dtype=bool).reshape(n)
    low = np.asarray(np.isin(ex.gcode, (g.G_LOW_GQ, g.G_LOW_DP)).all(axis=0),
                     dtype=bool).reshape(n)
    ft_failed = np.asarray((ex.gcode == g.G_FILTERED).all(axis=0), dtype=bool).reshape(n)
    missing = {"absent": 0, "no_coverage": 0, "filtered": 0, "low_quality": 0,
               "no_call": 0, "allele_mismatch": 0, "unnormalized": 0, "ambiguous": 0,
               "indel_without_record": 0, "reference_allele_unknown": 0,
               "alt_reads_without_call": 0}
    gvcf = ex.blocks_seen > 0
    for j in np.flatnonzero(~used):
        st, note = ex.state[j], ex.note[j]
        if ex.dropped[j]:
            why = "ambiguous"
        elif st >= S_BED:
            why = "low_quality" if low[j] else "filtered" if ft_failed[j] else "no_call"
        elif st == S_FILTERED:
            why = "filtered"
        elif st == S_MISMATCH:
            why = "unnormalized" if note == N_UNNORMALIZED else "allele_mismatch"
        elif note == N_INDEL:
            why = "indel_without_record"
        elif note == N_REF_UNKNOWN:
            why = "reference_allele_unknown"
        elif note == N_ALT_READS:
            why = "alt_reads_without_call"
        elif note in (N_NOT_CALLABLE, N_LOW_DEPTH) or gvcf:
            why = "no_coverage"
        else:
            why = "absent"
        missing[why] += 1
    kinds = {name: int(((ex.kind == k) & used).sum())
             for k, name in g.ALLELE_KINDS.items()}
    evidence = {name: int(((ex.state == st) & used).sum())
                for st, name in EVIDENCE.items()}
    calls = observed[:, used]
    reasons = ex.gcode[:, used]
    haploid = (ex.ploidy == 1) & observed
    par = np.array([in_par(ex.panel.build, s.chrom, s.pos) for s in ex.sites], bool)
    flipped = kinds["flipped"] + kinds["flipped_swapped"]
    n_used = int(used.sum())
    return {
        "panel_sites": n,
        "samples": int(ex.dosage.shape[0]),
        "matched": kinds["same"],
        "matched_swapped": kinds["swapped"],
        "matched_flipped": kinds["flipped"],
        "matched_flipped_swapped": kinds["flipped_swapped"],
        "matched_by_evidence": evidence,
        "missing": missing,
        "missing_absent": missing["absent"],
        "missing_filtered": missing["filtered"],
        "missing_genotype": int((~calls).sum()),
        "missing_genotype_by_reason": {name: int((reasons == code).sum())
                                       for code, name in g.GENOTYPE_REASONS.items()},
        "ambiguous_matched": int((ex.ambiguous & used).sum()),
        "ambiguous_dropped": int(ex.dropped.sum()),
        "strand_flips": flipped,
        "ploidy": {"diploid": int(((ex.ploidy == 2) & observed).sum()),
                   "haploid": int(haploid.sum()),
                   "haploid_in_par": int((haploid & par[None, :]).sum())},
        "haploid_calls": int(haploid.sum()),
        "duplicate_records": ex.duplicates,
        "unnormalized_records": ex.unnormalized_records,
        "panel_unnormalized": int(ex.panel_unnormalized),
        "gvcf": gvcf,
        "call_rate": float(observed.mean()) if observed.size else 0.0,
        "match_rate": n_used / n,
        **extra,
    }

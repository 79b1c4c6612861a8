"""`genofed simulate`'s flags beyond the original few, and its run (kept here so that
cli/main.py stays small)."""

from __future__ import annotations

import argparse

from genofed.sim.demography import ANCESTRIES, parse_proportions
from genofed.sim.genome import SITE_SPACING, parse_chromosomes


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--reference-samples", type=int, default=500,
                   help="genomes that give the panel's allele frequencies (500)")
    s.add_argument("--ancestry", default="AFR=0.25,EUR=0.25,EAS=0.25,AMR=0.25",
                   help="ancestry proportions, NAME=FRACTION of " + ", ".join(ANCESTRIES) +
                        " (AMR: admixed 1/6 AFR, 1/3 EUR, 1/2 EAS)")
    s.add_argument("--chromosomes", default="1-22", help="autosomes with panel sites (1-22)")
    s.add_argument("--site-spacing", type=int, default=SITE_SPACING,
                   help=f"bp simulated per panel site on each chromosome ({SITE_SPACING})")
    s.add_argument("--heritability", type=float, default=0.5, help="liability-scale h2 (0.5)")
    s.add_argument("--causal-fraction", type=float, default=0.05,
                   help="fraction of panel sites that are causal (0.05)")
    s.add_argument("--genetic-correlation", type=float, default=0.8,
                   help="correlation of causal effects across ancestries (0.8)")
    s.add_argument("--prevalence", type=float, default=0.3, help="fraction of cases (0.3)")
    s.add_argument("--external-samples", type=int, default=0,
                   help="genomes of an external cohort (on no device) that a PGS Catalog "
                        "score under OUT/score/ is trained on (0: none)")
    s.add_argument("--external-ancestry", choices=ANCESTRIES, default="EUR",
                   help="the external cohort's ancestry (EUR)")
    s.add_argument("--missing-rate", type=float, default=0.005,
                   help="genotypes written as ./. (0.005)")


def run_simulate(args: argparse.Namespace) -> str:
    """Simulate as the flags say; the line the command prints."""
    from genofed.sim.cohort import simulate

    info = simulate(args.out, devices=args.devices, samples_per_device=args.samples_per_device,
                    variants=args.variants, panel_size=args.panel_size, seed=args.seed,
                    test_samples=args.test_samples, split=args.split,
                    reference_samples=args.reference_samples,
                    ancestry=parse_proportions(args.ancestry),
                    chromosomes=parse_chromosomes(args.chromosomes),
                    site_spacing=args.site_spacing, heritability=args.heritability,
                    causal_fraction=args.causal_fraction,
                    genetic_correlation=args.genetic_correlation, prevalence=args.prevalence,
                    missing_rate=args.missing_rate, external_samples=args.external_samples,
                    external_ancestry=args.external_ancestry)
    chroms = info.chromosomes
    return (f"{info.root}: {len(info.device_ids)} devices x {info.samples_per_device} samples, "
            f"{info.test_samples} held-out test samples, {info.variants} variants on "
            f"{len(chroms)} autosomes, panel of {info.panel_size} sites ({info.panel}), "
            f"effective independent markers (Li-Ji M_eff) {info.meff:.0f}"
            + (f"; score trained on the external cohort: {info.score}" if info.score else ""))

"""What `genofed simulate` draws: its parameters, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from genofed.errors import LocalInputError
from genofed.sim.demography import ANCESTRIES, DEFAULT_PROPORTIONS, check_proportions
from genofed.sim.genome import AUTOSOMES, SITE_SPACING, check_chromosomes


@dataclass(frozen=True)
class SimParams:
    """A cohort: `devices` x `samples_per_device` genomes (1 a device: cross-device; thousands:
    cross-silo clinics), a held-out test set, reference genomes for the panel's frequencies,
    and optionally an external cohort of one ancestry (for a score trained elsewhere)."""

    devices: int
    samples_per_device: int
    variants: int
    panel_size: int
    seed: int
    test_samples: int = 400
    reference_samples: int = 500
    causal_fraction: float = 0.05
    heritability: float = 0.5
    prevalence: float = 0.3
    missing_rate: float = 0.005
    split: str = "population"
    ancestry: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PROPORTIONS))
    genetic_correlation: float = 0.8
    chromosomes: tuple[int, ...] = AUTOSOMES
    site_spacing: int = SITE_SPACING
    external_samples: int = 0
    external_ancestry: str = "EUR"

    def __post_init__(self) -> None:
        for k in ("devices", "samples_per_device", "variants", "panel_size", "seed",
                  "test_samples", "reference_samples", "site_spacing", "external_samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise LocalInputError(f"simulate: {k} must be a non-negative integer, got {v!r}")
        object.__setattr__(self, "ancestry", check_proportions(dict(self.ancestry)))
        object.__setattr__(self, "chromosomes", check_chromosomes(tuple(self.chromosomes)))
        checks = (
            (self.devices >= 1, f"devices must be >= 1, got {self.devices}"),
            (self.samples_per_device >= 1,
             f"samples_per_device must be >= 1, got {self.samples_per_device}"),
            (self.reference_samples >= 10,
             f"reference_samples must be >= 10, got {self.reference_samples}"),
            (1 <= self.panel_size <= self.variants,
             f"panel_size must lie in 1..variants ({self.variants}), got {self.panel_size}"),
            (0.0 < self.causal_fraction <= 1.0,
             f"causal_fraction must lie in (0, 1], got {self.causal_fraction}"),
            (0.0 <= self.heritability <= 1.0,
             f"heritability must lie in [0, 1], got {self.heritability}"),
            (0.0 < self.prevalence < 1.0, f"prevalence must lie in (0, 1), got {self.prevalence}"),
            (0.0 <= self.missing_rate < 1.0,
             f"missing_rate must lie in [0, 1), got {self.missing_rate}"),
            (self.split in ("population", "iid"),
             f"split must be 'population' or 'iid', got {self.split!r}"),
            (0.0 <= self.genetic_correlation <= 1.0,
             f"genetic_correlation must lie in [0, 1], got {self.genetic_correlation}"),
            (self.site_spacing >= 100, f"site_spacing must be >= 100 bp, got {self.site_spacing}"),
            (self.external_ancestry in ANCESTRIES,
             f"external_ancestry must be one of {', '.join(ANCESTRIES)}, got "
             f"{self.external_ancestry!r}"),
        )
        for ok, what in checks:
            if not ok:
                raise LocalInputError(f"simulate: {what}")

    @property
    def n_causal(self) -> int:
        return max(1, round(self.causal_fraction * self.panel_size))

    @property
    def n_phenotyped(self) -> int:
        return self.devices * self.samples_per_device + self.test_samples

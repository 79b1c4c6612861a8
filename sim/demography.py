"""Ancestries and the out-of-Africa demography the cohorts are drawn from.

The model is stdpopsim's HomSap `AmericanAdmixture_4B18` (Browning et al. 2018, PLoS Genet.
14:e1007385; stdpopsim 0.3.0 still accepts its old name `AmericanAdmixture_4B11`), written
here with msprime's demography API so that a run downloads and imports nothing beyond msprime.
Its out-of-Africa part is Gutenkunst et al. 2009's three-population model as refitted by
Browning et al.; an admixed American population forms 12 generations ago from African (1/6),
European (1/3) and East Asian (1/2) lineages (East Asian as the proxy for Native American
ancestry, as in the paper). `tests/unit/test_sim_demography.py` checks this model against
stdpopsim's own, where stdpopsim is installed.

Our ancestry labels: AFR, EUR, EAS and AMR (the admixed population).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from genofed.errors import LocalInputError

ANCESTRIES = ("AFR", "EUR", "EAS", "AMR")
SOURCES = ("AFR", "EUR", "EAS")  # AMR's source ancestries, in the order of ADMIXTURE
ADMIXTURE = (1 / 6, 1 / 3, 1 / 2)  # AMR = 1/6 AFR + 1/3 EUR + 1/2 EAS, 12 generations ago
MUTATION_RATE = 2.36e-8  # the model's own (stdpopsim AmericanAdmixture_4B18.mutation_rate)
GENERATION_YEARS = 25
DEFAULT_PROPORTIONS = {"AFR": 0.25, "EUR": 0.25, "EAS": 0.25, "AMR": 0.25}

# Browning et al. 2018 (Table 1 / stdpopsim), sizes diploid, times in generations.
_N_A, _N_AF, _N_B = 7310, 14474, 1861
_N_EU0, _N_AS0, _N_MX0 = 1032, 554, 30000
_R_EU, _R_AS, _R_MX = 0.0038, 0.0048, 0.05
_T_AF, _T_B, _T_EU_AS, _T_ADMIX = 5920, 2040, 920, 12
_M_AF_B, _M_AF_EU, _M_AF_AS, _M_EU_AS = 15e-5, 2.5e-5, 0.78e-5, 3.11e-5


def demography() -> Any:
    """The four-population msprime.Demography (AFR, EUR, EAS, AMR)."""
    import msprime

    n_eu = _N_EU0 * math.exp(_R_EU * _T_EU_AS)
    n_as = _N_AS0 * math.exp(_R_AS * _T_EU_AS)
    n_mx = _N_MX0 * math.exp(_R_MX * _T_ADMIX)
    d = msprime.Demography()
    d.add_population(name="AFR", initial_size=_N_AF, description="African")
    d.add_population(name="EUR", initial_size=n_eu, growth_rate=_R_EU, description="European")
    d.add_population(name="EAS", initial_size=n_as, growth_rate=_R_AS,
                     description="East Asian")
    d.add_population(name="AMR", initial_size=n_mx, growth_rate=_R_MX,
                     description="admixed American")
    d.set_symmetric_migration_rate(["AFR", "EUR"], _M_AF_EU)
    d.set_symmetric_migration_rate(["AFR", "EAS"], _M_AF_AS)
    d.set_symmetric_migration_rate(["EUR", "EAS"], _M_EU_AS)
    # Backwards in time: AMR's lineages go to their sources (proportions of what remains).
    d.add_mass_migration(time=_T_ADMIX, source="AMR", dest="AFR", proportion=ADMIXTURE[0])
    d.add_mass_migration(time=_T_ADMIX, source="AMR", dest="EUR",
                         proportion=ADMIXTURE[1] / (1 - ADMIXTURE[0]))
    d.add_mass_migration(time=_T_ADMIX, source="AMR", dest="EAS", proportion=1.0)
    d.add_migration_rate_change(time=_T_EU_AS, rate=0.0)
    d.add_mass_migration(time=_T_EU_AS, source="EAS", dest="EUR", proportion=1.0)
    d.add_population_parameters_change(time=_T_EU_AS, initial_size=_N_B, growth_rate=0.0,
                                       population="EUR")
    d.add_migration_rate_change(time=_T_EU_AS, rate=_M_AF_B, source="AFR", dest="EUR")
    d.add_migration_rate_change(time=_T_EU_AS, rate=_M_AF_B, source="EUR", dest="AFR")
    d.add_migration_rate_change(time=_T_B, rate=0.0)
    d.add_mass_migration(time=_T_B, source="EUR", dest="AFR", proportion=1.0)
    d.add_population_parameters_change(time=_T_AF, initial_size=_N_A, population="AFR")
    return d


def parse_proportions(text: str) -> dict[str, float]:
    """`AFR=0.2,EUR=0.5,...` (or `AFR:0.2`) into proportions summing to 1, our ancestries only."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.replace(":", "=").partition("=")
        name = name.strip().upper()
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not sep or name not in ANCESTRIES or not v >= 0 or name in out:
            raise LocalInputError(f"simulate: ancestry proportions: bad entry {part!r} in "
                                  f"{text!r}; want NAME=FRACTION with NAME one of "
                                  f"{', '.join(ANCESTRIES)}, each once")
        out[name] = v
    return check_proportions(out)


def check_proportions(props: dict[str, float]) -> dict[str, float]:
    """Validate and normalize; every ancestry present, in ANCESTRIES order."""
    bad = [k for k in props if k not in ANCESTRIES]
    total = sum(props.values())
    if bad or any(not v >= 0 for v in props.values()) or not total > 0:
        raise LocalInputError(f"simulate: ancestry proportions {props!r}: want non-negative "
                              f"fractions of {', '.join(ANCESTRIES)} with a positive sum")
    if abs(total - 1.0) > 1e-6:
        raise LocalInputError(f"simulate: ancestry proportions {props!r} sum to {total:.4g}, "
                              f"not 1")
    return {k: float(props.get(k, 0.0)) for k in ANCESTRIES}


def exact_counts(n: int, props: dict[str, float]) -> np.ndarray:
    """Counts per ancestry (ANCESTRIES order) summing to n, largest remainder."""
    want = np.array([props[k] for k in ANCESTRIES]) * n
    counts = np.floor(want).astype(np.int64)
    order = np.argsort(-(want - counts), kind="stable")
    counts[order[:n - counts.sum()]] += 1
    return counts


def draw(n: int, props: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """n ancestry codes (index into ANCESTRIES) in exactly the stated proportions, shuffled."""
    return rng.permutation(np.repeat(np.arange(len(ANCESTRIES), dtype=np.int8),
                                     exact_counts(n, props)))


def device_ancestries(devices: int, per_device: int, props: dict[str, float], split: str,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """Each device's ancestry codes. `iid`: the whole cohort in the stated proportions, dealt
    out at random. `population`: devices get a major ancestry in the stated proportions (so
    one-genome devices follow them exactly), 80% of a device's samples from it, the rest drawn
    from the proportions."""
    if split == "iid":
        return list(draw(devices * per_device, props, rng).reshape(devices, per_device))
    majors = draw(devices, props, rng)
    n_major = round(0.8 * per_device)
    out = []
    for m in majors:
        rest = rng.choice(len(ANCESTRIES), size=per_device - n_major,
                          p=[props[k] for k in ANCESTRIES]).astype(np.int8)
        out.append(rng.permutation(np.concatenate([np.full(n_major, m, np.int8), rest])))
    return out

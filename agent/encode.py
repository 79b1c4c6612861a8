"""Model inputs from dosages: standardized against the panel's frequencies, missing -> 2p.

x = (d - 2p) / sqrt(2p(1-p)), the standardized genotype of GWAS and polygenic scores. A missing
dosage is imputed as 2p, the panel's expectation (never the device's own handful of samples),
which after standardization is exactly 0. The manifest names this encoding
`standardized_dosage` with `missing = "2p"`.
"""

from __future__ import annotations

import numpy as np

from genofed.errors import LocalInputError

ENCODING = "standardized_dosage"


def encode_dosages(dosage: np.ndarray, af: np.ndarray) -> np.ndarray:
    """Standardize a [samples, sites] dosage matrix (NaN = missing) into float32 model inputs."""
    if dosage.ndim != 2 or dosage.shape[1] != af.shape[0]:
        raise LocalInputError(f"dosage matrix of shape {dosage.shape} does not fit a panel of "
                              f"{af.shape[0]} sites")
    p = af.astype(np.float64)
    scale = np.sqrt(2.0 * p * (1.0 - p))
    x = (dosage.astype(np.float64) - 2.0 * p) / scale
    x[np.isnan(x)] = 0.0
    return x.astype(np.float32)

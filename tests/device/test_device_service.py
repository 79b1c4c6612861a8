"""The owner's commands in the device profile (no torch), on a bundle the coordinator exported:
predict, consent, audit, status, cost, bench and the unit, as `make test` and `make test-aarch64`
run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.vcftools import vcf_text, write_vcf

from genofed.models.manifest import load_bundle
from genofed.models.signing import ensure_signing_key, save_verify_key

pytestmark = pytest.mark.device

SNIPPET = """
import sys
from genofed.cli.main import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules, "the agent's commands imported torch"
sys.exit(code)
"""


def _genofed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SNIPPET, *args], capture_output=True,
                          text=True, timeout=300)


def _device(tmp_path: Path, exported: Path) -> tuple[Path, np.ndarray]:
    bundle = load_bundle(exported / "logreg", trust=None)
    panel = bundle.panel()
    rng = np.random.default_rng(2)
    gts = rng.integers(0, 3, size=(len(panel), 2))
    rows = [(s.chrom, s.pos, s.id, s.ref, s.alt, ".", "PASS", ".", "GT",
             *({0: "0/0", 1: "0/1", 2: "1/1"}[int(g)] for g in gts[i]))
            for i, s in enumerate(panel.sites)]
    vcf = write_vcf(tmp_path / "me.vcf.gz", vcf_text(rows, ["me", "sibling"],
                                                     contigs=(("chr2", None),)))
    (tmp_path / "pheno.tsv").write_text("sample\tphenotype\nme\t1\nsibling\t0\n")
    save_verify_key(tmp_path / "aggregator.pub",
                    ensure_signing_key(tmp_path / "agg.key").verify_key)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'device_id = "dev00"\nfederation = "demo"\nbundle = "{exported}/logreg"\n'
                   f'vcf = "{vcf}"\nphenotypes = "{tmp_path}/pheno.tsv"\n'
                   f'aggregator_key = "{tmp_path}/aggregator.pub"\n'
                   f'coordinator_key = "{exported}/coordinator.pub"\n'
                   f'state_dir = "{tmp_path}/state"\n')
    (tmp_path / "state").mkdir()
    w = rng.normal(0, 0.2, bundle.layout.n_params).astype(np.float32)
    w[~bundle.layout.keep] = 0.0  # pruned coordinates: 0 in every global model
    np.savez(tmp_path / "state" / "model.npz", version=np.int64(3), weights=w)
    # The oracle: x @ W.T + b on the standardized dosages (missing none here).
    params = bundle.layout.unflatten(w)
    weight = next(v for v in params.values() if v.ndim == 2).astype(np.float64)
    bias = float(next(v for v in params.values() if v.ndim == 1)[0])
    af = np.array([s.af for s in panel.sites])
    x = (gts.T - 2 * af) / np.sqrt(2 * af * (1 - af))
    return cfg, x @ weight[0] + bias


def test_owner_commands_in_the_device_profile(tmp_path: Path, exported: Path) -> None:
    cfg, logits = _device(tmp_path, exported)
    pred = _genofed("agent", "predict", "--config", str(cfg), "--json")
    assert pred.returncode == 0, pred.stderr
    got = json.loads(pred.stdout)
    assert got["model_version"] == 3 and got["match_rate"] == 1.0
    np.testing.assert_allclose([r["logit"] for r in got["scores"]], logits, atol=1e-4)
    for args in (("consent", "grant"), ("consent", "withdraw"), ("audit",), ("status",),
                 ("cost",), ("bench", "--devices", "3"), ("install-service", "--print-unit")):
        done = _genofed("agent", args[0], "--config", str(cfg), *args[1:])
        # A state_dir outside /var/lib cannot go into a unit: one line, status 1.
        want = 1 if args[0] == "install-service" else 0
        assert done.returncode == want, (args, done.stdout, done.stderr)
    status = json.loads(_genofed("agent", "status", "--config", str(cfg), "--json").stdout)
    assert status["consent"].startswith("withdrawn") and not status["running"]

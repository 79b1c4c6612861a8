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
    # the float model's logits are the oracle's; the score given is the INT8 model's, within
    # its bound of them; both placed among the bundle's 60 reference genomes
    np.testing.assert_allclose([r["logit_float"] for r in got["scores"]], logits, atol=1e-4)
    assert got["scored_by"] == "int8" and got["reference"]["genomes"] == 60
    for r in got["scores"]:
        assert abs(r["logit"] - r["logit_float"]) <= r["int8_logit_tolerance"]
        assert abs(r["score"] - r["score_float"]) <= r["int8_score_tolerance"]
        assert r["within_tolerance"] and 0 <= r["percentile"] <= 100
        assert set(r["percentile_by_ancestry"]) == {"AFR", "EUR"}
    text = _genofed("agent", "predict", "--config", str(cfg))
    assert text.returncode == 0 and "INT8 inference model" in text.stdout, text.stderr
    for args in (("consent", "grant"), ("consent", "withdraw"), ("audit",), ("status",),
                 ("cost",), ("bench", "--devices", "3"), ("install-service", "--print-unit")):
        done = _genofed("agent", args[0], "--config", str(cfg), *args[1:])
        # A state_dir outside /var/lib cannot go into a unit: one line, status 1.
        want = 1 if args[0] == "install-service" else 0
        assert done.returncode == want, (args, done.stdout, done.stderr)
    status = json.loads(_genofed("agent", "status", "--config", str(cfg), "--json").stdout)
    assert status["consent"].startswith("withdrawn") and not status["running"]


def test_status_shows_the_privacy_ledger_in_the_device_profile(tmp_path: Path,
                                                                exported: Path) -> None:
    """After a round with differential privacy, `agent status` shows the device's own ledger
    (the privacy line) and the epsilon spent against the owner's caps."""
    from genofed.agent import consent, ledger
    from genofed.aggregator.config import (
        AggregatorConfig,
        PrivacySection,
        RoundsSection,
        StudySection,
    )
    from genofed.aggregator.privacy import PrivacyLedger
    from genofed.aggregator.rounds import RoundRandom, plan_round
    from genofed.protocol.schema import SecureTask
    from genofed.protocol.secagg import SigningIdentity

    cfg, _ = _device(tmp_path, exported)
    before = json.loads(_genofed("agent", "status", "--config", str(cfg), "--json").stdout)
    assert "no epsilon spent" in before["privacy"]
    assert before["epsilon"]["text"].startswith("none spent")
    agg, devs = SigningIdentity.generate(), [SigningIdentity.generate() for _ in range(6)]
    acfg = AggregatorConfig(federation="demo", bundle=Path("b"), state_dir=Path("s"),
                            rounds=RoundsSection(rounds=4), study=StudySection(name="T2D"),
                            privacy=PrivacySection(epsilon=4.0, delta=1e-5))
    task = plan_round(acfg, 0, 0, {f"d{i}": k.public.raw for i, k in enumerate(devs)},
                      agg.public, 60, RoundRandom(np.random.default_rng(0), lambda: b"\0" * 32),
                      privacy=PrivacyLedger(4.0, 1e-5))
    state = tmp_path / "state"
    consent.set_consent(state, "granted", epsilon_cap=5.0)
    ledger.record(state, SecureTask.open(task.seal(agg), agg.public, "demo"))
    eps = ledger.spent(state).epsilon(1e-5)
    done = _genofed("agent", "status", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert f"privacy: epsilon {eps:.3g} (per study: T2D {eps:.3g})" in done.stdout, done.stdout
    assert f"epsilon vs cap: device: {eps:.3g} of cap 5 ({eps / 5:.0%}) in total" in done.stdout
    view = json.loads(_genofed("agent", "status", "--config", str(cfg), "--json").stdout)
    assert view["epsilon"]["units"]["device"]["total"] == pytest.approx(eps)

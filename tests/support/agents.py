"""A real agent's configuration for tests: its device data from the shared cohort, its
identity, and an aggregator key it trusts (the signing key beside it, as `agg.key`)."""

from __future__ import annotations

from pathlib import Path

from genofed.models.signing import ensure_signing_key, save_verify_key

SEED = 5


def agent_config(tmp_path: Path, cohort: Path, bundle: Path, backend: str) -> Path:
    device = sorted(p for p in (cohort / "devices").iterdir() if p.is_dir())[0]
    ensure_signing_key(tmp_path / "state" / "identity.key")
    save_verify_key(tmp_path / "aggregator.pub",
                    ensure_signing_key(tmp_path / "agg.key").verify_key)
    path = tmp_path / "agent.toml"
    path.write_text(f'device_id = "dev00"\nfederation = "demo"\nbundle = "{bundle}"\n'
                    f'vcf = "{device / "calls.vcf.gz"}"\n'
                    f'phenotypes = "{device / "phenotypes.tsv"}"\n'
                    f'state_dir = "{tmp_path / "state"}"\n'
                    f'aggregator_key = "{tmp_path / "aggregator.pub"}"\n'
                    f'[training]\nthreads = 1\nseed = {SEED}\nbackend = "{backend}"\n')
    return path

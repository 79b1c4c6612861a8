"""Signed manifests: a device refuses unsigned, forged and tampered bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from genofed.errors import GenofedError
from genofed.models.manifest import load_bundle
from genofed.models.signing import (
    ensure_signing_key,
    generate_signing_key,
    load_signing_key,
    load_verify_key,
    save_signing_key,
    save_verify_key,
    sign_manifest,
)


@pytest.fixture()
def bundle(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported / "logreg", tmp_path / "b"))


def test_signed_bundle_verifies_under_the_coordinator_key(exported: Path, bundle: Path) -> None:
    key = load_verify_key(exported / "coordinator.pub")
    b = load_bundle(bundle, trust=key)
    assert b.signed_by == bytes(key).hex()
    assert load_bundle(bundle).signed_by is None  # no trust given: hashes only


def test_unsigned_bundle_is_refused(exported: Path, bundle: Path) -> None:
    (bundle / "manifest.sig").unlink()
    with pytest.raises(GenofedError, match="unsigned"):
        load_bundle(bundle, trust=load_verify_key(exported / "coordinator.pub"))


def test_bundle_signed_by_another_key_is_refused(exported: Path, bundle: Path) -> None:
    sign_manifest(bundle, generate_signing_key())
    with pytest.raises(GenofedError, match="does not verify"):
        load_bundle(bundle, trust=load_verify_key(exported / "coordinator.pub"))


def test_edited_manifest_is_refused(exported: Path, bundle: Path) -> None:
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["model_config"]["seed"] = 1
    (bundle / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    with pytest.raises(GenofedError, match="does not verify"):
        load_bundle(bundle, trust=load_verify_key(exported / "coordinator.pub"))


def test_swapped_graph_is_refused_by_its_hash(exported: Path, bundle: Path) -> None:
    shutil.copyfile(bundle / "step_adam.onnx", bundle / "step_sgd.onnx")
    with pytest.raises(GenofedError, match=r"step_sgd\.onnx has sha256"):
        load_bundle(bundle, trust=load_verify_key(exported / "coordinator.pub"))


def test_key_files(tmp_path: Path) -> None:
    key = generate_signing_key()
    save_signing_key(tmp_path / "c.key", key)
    save_verify_key(tmp_path / "c.pub", key.verify_key)
    assert (tmp_path / "c.key").stat().st_mode & 0o777 == 0o600
    assert bytes(load_signing_key(tmp_path / "c.key")) == bytes(key)
    assert load_verify_key(tmp_path / "c.pub") == key.verify_key
    (tmp_path / "c.key").chmod(0o644)
    with pytest.raises(GenofedError, match="readable by others"):
        load_signing_key(tmp_path / "c.key")
    (tmp_path / "bad.pub").write_text("abcd\n")
    with pytest.raises(GenofedError, match="64 hex digits"):
        load_verify_key(tmp_path / "bad.pub")


def test_agent_daemon_refuses_a_forged_bundle_in_one_line(exported: Path, bundle: Path,
                                                          tmp_path: Path) -> None:
    from conftest import run_genofed

    sign_manifest(bundle, generate_signing_key())
    ensure_signing_key(tmp_path / "state" / "identity.key")
    save_verify_key(tmp_path / "agg.pub", generate_signing_key().verify_key)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'device_id = "dev00"\nfederation = "t"\nbundle = "{bundle}"\n'
                   f'vcf = "calls.vcf.gz"\nphenotypes = "p.tsv"\nstate_dir = "state"\n'
                   f'aggregator_key = "agg.pub"\n'
                   f'coordinator_key = "{exported / "coordinator.pub"}"\n')
    r = run_genofed("agent", "run", "--config", str(cfg))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not verify" in lines[0], r.stderr

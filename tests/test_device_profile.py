"""The device never imports torch, and bad local input is one line with status 1."""

import subprocess
import sys
from pathlib import Path

from conftest import run_genofed

from genofed.models.signing import ensure_signing_key, generate_signing_key, save_verify_key


def test_agent_import_path_does_not_import_torch() -> None:
    code = ("import sys, genofed.cli.main, genofed.agent.daemon, genofed.agent.config; "
            "from genofed.cli.main import build_parser; build_parser(); "
            "bad = sorted(m for m in ('torch', 'msprime', 'sklearn', 'onnx') if m in sys.modules);"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"the agent's import path pulled in: {out}"


def _agent_config(tmp_path: Path, **over: str) -> Path:
    """A config whose device identity and aggregator key exist (made here)."""
    ensure_signing_key(tmp_path / "state" / "identity.key")
    save_verify_key(tmp_path / "agg.pub", generate_signing_key().verify_key)
    keys = {"device_id": '"dev00"', "federation": '"t"', "bundle": '"bundle"',
            "vcf": '"calls.vcf.gz"', "phenotypes": '"p.tsv"', "state_dir": '"state"',
            "aggregator_key": '"agg.pub"', **over}
    p = tmp_path / "agent.toml"
    p.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
    return p


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = _agent_config(tmp_path, threads="1")
    r = run_genofed("agent", "run", "--config", str(cfg))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'threads'" in lines[0] and str(cfg) in lines[0]


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    r = run_genofed("agent", "run", "--config", str(tmp_path / "none.toml"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not found" in r.stderr


def test_missing_vcf_is_one_line(tmp_path: Path, logreg_bundle: Path) -> None:
    cfg = _agent_config(tmp_path, bundle=f'"{logreg_bundle}"', vcf='"/nowhere/calls.vcf.gz"')
    r = run_genofed("agent", "run", "--config", str(cfg))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "/nowhere/calls.vcf.gz" in lines[0]


def test_json_logs_are_one_object_a_line(tmp_path: Path) -> None:
    import json

    r = run_genofed("--log-format", "json", "--log-level", "info", "simulate", "--out",
                    str(tmp_path / "c"), "--devices", "1", "--samples-per-device", "4",
                    "--variants", "50", "--panel-size", "5", "--test-samples", "4")
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert docs and all({"ts", "level", "logger", "msg"} <= set(d) for d in docs)

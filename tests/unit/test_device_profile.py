"""The device never imports torch, and bad local input is one line with status 1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_genofed

from genofed.models.signing import ensure_signing_key, generate_signing_key, save_verify_key

# glibc 2.28 and up: Raspberry Pi OS 12 (2.36), Ubuntu 22.04 on a Jetson (2.35), Ubuntu 24.04.
AARCH64 = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")


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


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12"])
def test_device_profile_installs_from_aarch64_wheels(python: str, tmp_path: Path) -> None:
    """`pip install genofed[agent]` on a 64-bit Raspberry Pi OS, Ubuntu or Jetson resolves to
    binary wheels only (nothing to compile on the device), and never to torch. Asks PyPI."""
    root = Path(__file__).resolve().parents[2]
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                        "--report", str(report), "--target", str(tmp_path / "t"),
                        "--python-version", python, "--only-binary=:all:",
                        *(f"--platform={p}" for p in AARCH64), f"{root}[agent]"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"no aarch64 wheels for Python {python}:\n{r.stderr[-3000:]}"
    got = {i["metadata"]["name"].lower(): i["download_info"]["url"]
           for i in json.loads(report.read_text())["install"]}
    assert {"onnxruntime", "numpy", "pysam", "paho-mqtt", "pynacl"} <= set(got)
    assert "torch" not in got
    for name, url in got.items():
        if name != "genofed":
            wheel = url.rsplit("/", 1)[-1]
            assert wheel.endswith(".whl") and ("aarch64" in wheel or "-none-any" in wheel), \
                f"{name}: {wheel}"

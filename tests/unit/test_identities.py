"""Identities from the command line: a device's and the aggregator's Ed25519 keys, and
enrollment of a device's public key with the aggregator."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from genofed.aggregator.state import state_path
from genofed.aggregator.store import Store
from genofed.cli.main import main

AGENT = """device_id = "dev00"
federation = "x"
bundle = "b"
vcf = "v.vcf"
phenotypes = "p.tsv"
state_dir = "devstate"
aggregator_key = "agg.pub"
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out.strip(), out.err.strip()


def test_enroll_a_device_with_the_aggregator(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agent.toml").write_text(AGENT)
    (tmp_path / "agg.toml").write_text('federation = "x"\nbundle = "b"\nstate_dir = "agg"\n')
    rc, out, _ = _run(capsys, "agent", "enroll", "--config", str(tmp_path / "agent.toml"))
    device, key = out.split()
    assert rc == 0 and device == "dev00" and len(bytes.fromhex(key)) == 32
    assert stat.S_IMODE((tmp_path / "devstate" / "identity.key").stat().st_mode) == 0o600
    assert _run(capsys, "agent", "enroll", "--config", str(tmp_path / "agent.toml"))[1] == out

    rc, agg_key, _ = _run(capsys, "aggregator", "identity", "--config",
                          str(tmp_path / "agg.toml"))
    assert rc == 0 and len(bytes.fromhex(agg_key)) == 32
    assert _run(capsys, "aggregator", "identity", "--config",
                str(tmp_path / "agg.toml"))[1] == agg_key  # made once, then kept

    assert _run(capsys, "aggregator", "enroll", "--config", str(tmp_path / "agg.toml"),
                "--device", "dev00", "--key", key)[0] == 0
    store = Store(state_path(tmp_path / "agg"))
    assert store.devices() == {"dev00": bytes.fromhex(key)}
    store.close()
    rc, _, err = _run(capsys, "aggregator", "enroll", "--config", str(tmp_path / "agg.toml"),
                      "--device", "dev01", "--key", "abc")
    assert rc == 1 and "not a 32-byte hex key" in err and "\n" not in err


def test_the_daemon_refuses_to_start_without_its_identity(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agent.toml").write_text(AGENT)
    rc, _, err = _run(capsys, "agent", "run", "--config", str(tmp_path / "agent.toml"))
    assert rc == 1 and "identity.key: no device identity" in err and "\n" not in err

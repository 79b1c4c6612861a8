"""The systemd unit: checked by systemd's own tools, installed into a temporary root.

systemd as PID 1 cannot run here; `systemd-analyze verify` and `security --offline` read the
unit as systemd would, and the installer runs into a folder standing for /.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from genofed.agent.config import load_agent_config
from genofed.agent.install import install_service, lookup_user
from genofed.agent.unit import UNIT_NAME, read_paths, render_unit, state_directory
from genofed.cli import main as cli
from genofed.errors import LocalInputError

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (apt systemd)")


def _config(tmp_path: Path, state_dir: str = "/var/lib/genofed") -> Path:
    data = tmp_path / "home" / "pi" / "genome"
    data.mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    cfg = tmp_path / "etc" / "agent.toml"
    cfg.write_text(f'device_id = "dev00"\nfederation = "demo"\nbundle = "{tmp_path}/bundle"\n'
                   f'vcf = "{data}/calls.vcf.gz"\nphenotypes = "{data}/pheno.tsv"\n'
                   f'aggregator_key = "{tmp_path}/etc/aggregator.pub"\n'
                   f'state_dir = "{state_dir}"\n')
    return cfg


def _unit(tmp_path: Path) -> Path:
    cfg = _config(tmp_path)
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(python=sys.executable, config=cfg,
                                state_dir=Path("/var/lib/genofed"),
                                reads=[cfg.parent, tmp_path / "home/pi/genome"]))
    return unit


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", str(_unit(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_analyze
def test_unit_offline_exposure_is_under_two(tmp_path: Path) -> None:
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(_unit(tmp_path))], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert m, done.stdout + done.stderr
    assert float(m.group(1)) < 2.0, done.stdout


def test_unit_restart_rules_follow_the_exit_statuses(tmp_path: Path) -> None:
    text = _unit(tmp_path).read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    assert "Restart=on-failure" in text  # 70 (a bug) and 75 (temporary) restart
    assert f"RestartPreventExitStatus={cli.EXIT_BAD_INPUT}\n" in text  # 1: a person fixes it
    for line in ("ProtectSystem=strict", "ProtectHome=tmpfs", "PrivateTmp=yes",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "StateDirectory=genofed",
                 "IOSchedulingClass=idle", "MemoryMax=", "CPUQuota=", "Nice="):
        assert line in text, line
    # The VCF's folder is bound read-only into the empty homes.
    assert f"-{tmp_path}/home/pi/genome" in text.split("BindReadOnlyPaths=")[1].split("\n")[0]


def test_state_dir_must_be_under_var_lib() -> None:
    assert state_directory(Path("/var/lib/genofed")) == "genofed"
    for bad in ("/home/pi/state", "relative", "/var/lib/../etc"):
        with pytest.raises(LocalInputError, match="state_dir"):
            state_directory(Path(bad))


def test_read_paths_keep_outer_folders_once() -> None:
    assert read_paths([Path("/data/a"), Path("/data"), Path("/etc/g"), Path("/data2")]) == \
        ["/data", "/data2", "/etc/g"]


def test_unit_refuses_paths_that_would_break_it(tmp_path: Path) -> None:
    with pytest.raises(LocalInputError, match="spaces"):
        render_unit(python=sys.executable, config=Path("/etc/my agent.toml"),
                    state_dir=Path("/var/lib/genofed"), reads=[])


def test_install_into_a_root(tmp_path: Path) -> None:
    if shutil.which("systemd-sysusers") is None and shutil.which("useradd") is None:
        pytest.skip("no systemd-sysusers or useradd")
    if os.geteuid() != 0:
        pytest.skip("chown of the state folder needs root")
    cfg_path = _config(tmp_path)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "var/lib/genofed").mkdir(parents=True)
    (root / "var/lib/genofed/identity.key").write_text("made by root")  # enrolled first
    said = install_service(load_agent_config(cfg_path), cfg_path, root=root)
    assert any("daemon-reload" in s for s in said)
    unit = (root / "etc/systemd/system" / UNIT_NAME).read_text()
    assert f"--config {cfg_path}" in unit
    uid, gid = lookup_user(root / "etc/passwd", "genofed")
    st = (root / "var/lib/genofed").stat()
    assert (st.st_uid, st.st_gid) == (uid, gid) and stat.S_IMODE(st.st_mode) == 0o700
    assert uid != 0
    assert (root / "var/lib/genofed/identity.key").stat().st_uid == uid
    # Again: nothing changes, nothing fails (the user exists).
    install_service(load_agent_config(cfg_path), cfg_path, root=root)
    assert lookup_user(root / "etc/passwd", "genofed") == (uid, gid)


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = _config(tmp_path)
    root = tmp_path / "root"
    assert cli.main(["agent", "install-service", "--config", str(cfg_path), "--root",
                     str(root), "--dry-run"]) == 0
    assert not root.exists()
    out = capsys.readouterr().out
    assert "would write" in out and "would create the system user 'genofed'" in out


def test_install_refuses_a_state_dir_outside_var_lib(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = _config(tmp_path, state_dir=str(tmp_path / "state"))
    assert cli.main(["agent", "install-service", "--config", str(cfg_path), "--root",
                     str(tmp_path / "root")]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "state_dir" in err

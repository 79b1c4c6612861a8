"""`genofed agent install-service`: the service user, the state folder and the unit, installed.

Run as root on the device (`sudo genofed agent install-service --config /etc/genofed/agent.
toml`). `--root DIR` installs into DIR as if it were / (an image being built, or a test);
`--dry-run` says what it would do and does nothing. The user comes from a sysusers.d entry
applied with `systemd-sysusers` (every systemd system has it; `useradd` where not), so
the same file recreates the user on a reset image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from genofed.agent.config import AgentConfig
from genofed.agent.unit import (
    SERVICE_USER,
    UNIT_NAME,
    Limits,
    render_sysusers,
    render_unit,
    state_directory,
)
from genofed.errors import LocalInputError


def folders_read(cfg: AgentConfig, config: Path) -> list[Path]:
    """Every folder the agent reads: its config's, the bundle, the VCF's and phenotypes',
    the keys' and the broker's certificates'."""
    b = cfg.broker
    files = [config, cfg.vcf, cfg.phenotypes, cfg.aggregator_key, cfg.coordinator_key,
             b.ca, b.cert, b.key]
    out = [Path(cfg.bundle).absolute()]
    out += [Path(f).absolute().parent for f in files if f is not None]
    return [p for p in out if p != cfg.state_dir and cfg.state_dir not in p.parents]


def install_service(cfg: AgentConfig, config: Path, *, root: Path = Path("/"),
                    user: str = SERVICE_USER, limits: Limits | None = None,
                    dry_run: bool = False, python: str = sys.executable) -> list[str]:
    """Install; returns one line per step done (or, with dry_run, to do)."""
    config = config.absolute()
    state_directory(cfg.state_dir)  # refuses a state_dir outside /var/lib
    unit = render_unit(python=python, config=config, state_dir=cfg.state_dir,
                       reads=folders_read(cfg, config), user=user,
                       limits=limits or Limits())
    unit_path = root / "etc/systemd/system" / UNIT_NAME
    users_path = root / "etc/sysusers.d/genofed.conf"
    state = root / cfg.state_dir.relative_to("/")
    said = [f"write {unit_path}", f"write {users_path}",
            f"create the system user {user!r} (systemd-sysusers)",
            f"create {state} (0700; it and what it holds owned by {user})"]
    on_host = root.resolve() == Path("/")
    reload_ = on_host and Path("/run/systemd/system").is_dir() and shutil.which("systemctl")
    said.append("systemctl daemon-reload" if reload_ else
                "no systemd running here: run `systemctl daemon-reload` on the device")
    if dry_run:
        return said
    _write(unit_path, unit, 0o644)
    _write(users_path, render_sysusers(user, str(cfg.state_dir)), 0o644)
    _make_user(users_path, root, user, str(cfg.state_dir))
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    uid, gid = lookup_user(root / "etc/passwd", user)
    for p in [state, *state.rglob("*")]:  # an identity `agent enroll` made as root, say
        os.chown(p, uid, gid, follow_symlinks=False)
    os.chmod(state, 0o700)
    if reload_:
        subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=60)
    return said


def _write(path: Path, text: str, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    except OSError as exc:
        raise LocalInputError(f"{path}: cannot write: {exc.strerror or exc} (run as root, "
                              f"or --root DIR)") from None


def _make_user(conf: Path, root: Path, user: str, home: str) -> None:
    """Apply the sysusers.d entry; `useradd` where systemd-sysusers is absent."""
    if shutil.which("systemd-sysusers"):
        cmd = ["systemd-sysusers", f"--root={root}", str(conf)]
    elif shutil.which("useradd"):
        try:
            lookup_user(root / "etc/passwd", user)
            return
        except LocalInputError:
            pass
        cmd = ["useradd", "--root", str(root), "--system", "--user-group", "--home-dir",
               home, "--no-create-home", "--shell", "/usr/sbin/nologin", user]
    else:
        raise LocalInputError("neither systemd-sysusers nor useradd found: cannot create the "
                              f"service user {user!r}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise LocalInputError(f"{cmd[0]}: cannot create the user {user!r}: "
                              f"{done.stderr.strip() or done.returncode}")


def lookup_user(passwd: Path, user: str) -> tuple[int, int]:
    """(uid, gid) of `user` in a passwd file."""
    try:
        lines = passwd.read_text().splitlines()
    except OSError as exc:
        raise LocalInputError(f"{passwd}: cannot read: {exc.strerror or exc}") from None
    for line in lines:
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == user:
            return int(parts[2]), int(parts[3])
    raise LocalInputError(f"{passwd}: no user {user!r}")

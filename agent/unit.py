"""The agent's systemd unit and sysusers.d entry, rendered for one config (no I/O here).

The daemon's exit statuses (README, `cli/main.py`) decide the restart rules: 0 finished or
stopped (no restart), 1 bad local input that a person must fix (RestartPreventExitStatus, so
a broken VCF is not re-read every 30 s), 75 a temporary failure and 70 a bug (restarted,
after RestartSec, at most StartLimitBurst times in StartLimitIntervalSec).

Sandboxing: the agent needs the network (its broker), its state folder (written), and its
config, bundle, keys, VCF and phenotypes (read). Everything else is hidden or read-only:
ProtectSystem=strict makes the whole file system read-only but StateDirectory; the homes are
an empty tmpfs into which the folders it reads are bound read-only, so a VCF under /home is
readable and nothing else there is. No capabilities, no new privileges, no devices, system
calls limited to @system-service. Not set: MemoryDenyWriteExecute (onnxruntime and cffi
may map executable memory; untested under it), PrivateNetwork and IPAddressDeny (the broker
may be anywhere). `systemd-analyze security --offline=yes` puts its exposure at 1.1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from genofed.errors import LocalInputError

UNIT_NAME = "genofed-agent.service"
SERVICE_USER = "genofed"
STATE_ROOT = PurePosixPath("/var/lib")


@dataclass(frozen=True)
class Limits:
    """Resource limits of the service: the device's owner keeps the rest of the machine."""

    memory_max: str = "512M"
    cpu_quota: str = "80%"
    nice: int = 10
    watchdog_s: int = 120


def state_directory(state_dir: Path) -> str:
    """StateDirectory= for `state_dir`, which must lie under /var/lib (systemd makes it,
    owned by the service user, before each start)."""
    p = PurePosixPath(state_dir)
    if not p.is_absolute() or STATE_ROOT not in p.parents or ".." in p.parts:
        raise LocalInputError(f"state_dir = {state_dir}: the service keeps its state under "
                              f"{STATE_ROOT} (StateDirectory=); set state_dir = "
                              f"\"/var/lib/genofed\" in the config")
    return str(p.relative_to(STATE_ROOT))


def read_paths(folders: Iterable[Path]) -> list[str]:
    """The folders the service reads, each once; a folder inside another one given is left
    out (the outer bind covers it)."""
    kept: list[str] = []
    for f in sorted({str(PurePosixPath(f)) for f in folders}):
        if not any(f == k or f.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(f)
    return kept


def render_unit(*, python: str, config: Path, state_dir: Path, reads: Iterable[Path],
                user: str = SERVICE_USER, limits: Limits | None = None) -> str:
    """The unit file's text. `reads`: the folders the agent reads (bound read-only
    into its otherwise empty homes; readable anyway elsewhere under ProtectSystem=strict)."""
    for v in (python, str(config), *map(str, reads)):
        if any(c.isspace() or c in "\"'\\%$;" for c in v):
            raise LocalInputError(f"{v}: paths with spaces, quotes or %$; cannot go into the "
                                  f"unit; move the file or link it from a plain path")
    limits = limits or Limits()
    binds = " ".join(f"-{p}" for p in read_paths(reads))  # '-': a missing path is no error
    return f"""\
# genofed edge agent, installed by `genofed agent install-service`.
[Unit]
Description=genofed edge agent (federated learning on this device's variant calls)
Documentation=https://github.com/genofed/genofed
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=1h
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={python} -m genofed agent run --config {config}
ExecReload=/bin/kill -HUP $MAINPID
User={user}
Group={user}
StateDirectory={state_directory(state_dir)}
StateDirectoryMode=0700
UMask=0077
# Exit statuses: 0 done, 1 bad local input (a person fixes a file), 75 temporary, 70 a bug.
Restart=on-failure
RestartSec=30s
RestartPreventExitStatus=1
WatchdogSec={limits.watchdog_s}s
TimeoutStopSec=10s
# The owner's machine comes first.
MemoryMax={limits.memory_max}
CPUQuota={limits.cpu_quota}
Nice={limits.nice}
IOSchedulingClass=idle
# Sandbox.
ProtectSystem=strict
PrivateMounts=yes
ProtectHome=tmpfs
BindReadOnlyPaths={binds}
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
KeyringMode=private
DevicePolicy=closed
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def render_sysusers(user: str = SERVICE_USER, home: str = "/var/lib/genofed") -> str:
    """sysusers.d(5) line for the service user: a system user with no login and no home."""
    return f'u {user} - "genofed edge agent" {home} /usr/sbin/nologin\n'

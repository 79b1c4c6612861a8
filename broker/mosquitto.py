"""Run a real Mosquitto on a free loopback port: the broker `genofed demo` starts (and tests)."""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from genofed.broker.deploy import render_conf, write_conf
from genofed.errors import LocalInputError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or a LocalInputError saying how to install it."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise LocalInputError("mosquitto not found: install it with `sudo apt-get install mosquitto` "
                          "(or run `make demo`, which does)")


class LocalMosquitto:
    """A Mosquitto process on 127.0.0.1:<port>, with its config and log in `workdir`.

    Plain and anonymous by default; with `secured` (a directory made by `genofed broker init`)
    it runs that deployment's TLS-only configuration, certificates and ACL on `port`.

    Persistence is on, so a restart keeps retained messages, sessions and queued messages, as
    a deployment's would; killed outright, it loses what it acknowledged since its last save
    (`broker/deploy.py` AUTOSAVE_S).
    """

    def __init__(self, workdir: Path, port: int | None = None, *,
                 secured: Path | None = None) -> None:
        self.workdir = workdir
        self.secured = secured
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"

    def start(self, timeout_s: float = 10.0) -> LocalMosquitto:
        """Start the broker and wait until it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Run as whoever started us: as root, Mosquitto would otherwise drop to `mosquitto`,
        # which cannot read a private temporary directory.
        run_as = getpass.getuser() if os.geteuid() == 0 else None
        if self.secured:
            self.conf = write_conf(self.secured, port=self.port, run_as=run_as)
            self.log_path = self.secured / "mosquitto.log"
        else:
            self.conf.write_text(render_conf(port=self.port, bind="127.0.0.1",
                                             data_dir=self.workdir, log_file=self.log_path,
                                             run_as=run_as))
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf)],
                                     stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LocalInputError(f"mosquitto exited with status {self.proc.returncode}; "
                                      f"see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    log.info("mosquitto listening on 127.0.0.1:%d", self.port)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise LocalInputError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto` sends: Mosquitto reads its configuration,
        ACL and CRL again (a revocation takes effect); connections stay up."""
        if self.proc is None or self.proc.poll() is not None:
            raise LocalInputError("mosquitto is not running")
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL), letting it save its persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalMosquitto:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

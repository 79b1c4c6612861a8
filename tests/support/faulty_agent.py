"""A device daemon with faults, for integration tests: `genofed agent run` plus test-only
behaviours, none of which the production daemon has.

    python tests/support/faulty_agent.py --config DEVICE.toml [--dump-deltas]
        [--die-after STAGE] [--hang-after STAGE] [--corrupt-share ROUND]
        [--poison KIND[,KIND...]] [--zero-key] [--garbage-shares] [--lie-in-unmasking]

--dump-deltas writes each round's plain delta into the device's own state folder
(`delta-{round}.npz`, keys `delta` and `n_examples`), so a test can check the aggregate
against the plain mean. --die-after STAGE (a SecAgg+ stage name, e.g. SHARE_KEYS) exits
abruptly with status 137 right after the broker has acknowledged the device's answer to that
stage, as a device that loses power would: no clean disconnect, so the broker sends its will.
--hang-after STAGE answers that stage and then nothing more while it stays connected and
online, as a device whose process froze would: the next stage waits for it until its
deadline. --corrupt-share ROUND sends, in that round, one unmasking share off by one in its
first limb (properly signed); --lie-in-unmasking sends every unmasking share off by one, in
every round. --poison sends a poisoned ring vector instead of its honest
encoding (the kinds of `poison.py`: skip-clip, crafted-ring, negative-weight,
inflated-weight, within-bound, within-bound-flip), the first kind in the first round it
joins, the next in the next, and so on, then honestly. --zero-key advertises an all-zero
X25519 mask key, --garbage-shares seals random bytes to every neighbour, each signed by the
device's own identity (`disrupt.py`): a device with a valid certificate that keeps answering
and disrupts. Tests start it with `spawn`.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genofed.agent.config import AgentConfig, load_agent_config
from genofed.agent.core import Job
from genofed.agent.daemon import Agent
from genofed.cli.logs import setup_logging
from genofed.cli.main import _stop_on_signals
from genofed.errors import GenofedError
from genofed.protocol.secagg import Stage
from genofed.protocol.secagg.messages import decode
from genofed.transport.mqtt import MqttLink

try:
    from support import disrupt, poison
except ImportError:  # run as a script: its own folder is on the path
    import disrupt  # type: ignore[no-redef]
    import poison  # type: ignore[no-redef]

log = logging.getLogger("genofed.tests.faulty_agent")
SCRIPT = Path(__file__).resolve()


class FaultyAgent(Agent):
    """`Agent` with the faults its flags name."""

    def __init__(self, cfg: AgentConfig, *, dump_deltas: bool = False,
                 die_after: str | None = None, hang_after: str | None = None,
                 corrupt_share: int | None = None, poison: Sequence[str] = (),
                 zero_key: bool = False, garbage_shares: bool = False,
                 lie_in_unmasking: bool = False) -> None:
        super().__init__(cfg)
        self.lie_in_unmasking = lie_in_unmasking
        self.dump_deltas = dump_deltas
        self.die_after, self.hang_after = die_after, hang_after
        self.corrupt_share = corrupt_share
        self.poison = list(poison)  # one kind per round joined, in turn
        self.zero_key, self.garbage_shares = zero_key, garbage_shares
        self.hung = False
        self.delta = np.zeros(0)

    def train(self, job: Job) -> tuple[np.ndarray, int]:
        delta, n = super().train(job)
        if self.dump_deltas:
            np.savez(self.cfg.state_dir / f"delta-{job.task.round}.npz", delta=delta,
                     n_examples=n)
        self.delta = delta
        return delta, n

    def start_round(self, job: Job) -> bytes | None:
        advert = super().start_round(job)
        if advert is not None and self.poison and self.participation is not None:
            kind = self.poison.pop(0)
            ring = poison.poisoned(kind, job.task, self.layout.trained(job.weights),
                                   self.layout.trained(self.delta))
            self.participation.client.set_input(ring)  # before stage 2 masks it
            log.warning("test fault: round %d: a poisoned input (%s)", job.task.round, kind)
        return advert

    def send(self, link: MqttLink, payload: bytes) -> None:
        if self.zero_key:
            payload = disrupt.zero_key(payload, self.identity)
        if self.garbage_shares:
            payload = disrupt.garbage_shares(payload, self.identity)
        super().send(link, payload)  # returns once the broker has acknowledged it (QoS 1)
        p = self.participation
        answered = None if p is None else Stage(p.stage - 1).name
        if self.die_after and answered == self.die_after:
            log.warning("test fault: exiting abruptly after %s", self.die_after)
            logging.shutdown()
            os._exit(137)
        if self.hang_after and answered == self.hang_after:
            log.warning("test fault: answering nothing more after %s", self.hang_after)
            self.hung = True

    def handle(self, topic: str, payload: bytes, *, redelivered: bool = False) -> bytes | None:
        reply = None if self.hung else super().handle(topic, payload, redelivered=redelivered)
        if reply is not None and (self.lie_in_unmasking or (self.corrupt_share is not None
                                  and decode(reply).header.round == self.corrupt_share)):
            changed = disrupt.wrong_reveal(reply, self.identity,
                                           count=None if self.lie_in_unmasking else 1)
            if changed != reply:
                log.warning("test fault: unmasking share(s) off by one")
            reply = changed
        return reply


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--dump-deltas", action="store_true")
    # Not UNMASKING: the daemon ends its participation with that answer, before sending it.
    stages = [s.name for s in Stage if s < Stage.UNMASKING]
    p.add_argument("--die-after", choices=stages)
    p.add_argument("--hang-after", choices=stages)
    p.add_argument("--corrupt-share", type=int, metavar="ROUND",
                   help="send one unmasking share off by one in that round")
    p.add_argument("--poison", default="", help="comma-separated kinds, one per round joined")
    p.add_argument("--zero-key", action="store_true")
    p.add_argument("--garbage-shares", action="store_true")
    p.add_argument("--lie-in-unmasking", action="store_true")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    args = p.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        agent = FaultyAgent(load_agent_config(args.config), dump_deltas=args.dump_deltas,
                            die_after=args.die_after, hang_after=args.hang_after,
                            corrupt_share=args.corrupt_share,
                            poison=[k for k in args.poison.split(",") if k],
                            zero_key=args.zero_key, garbage_shares=args.garbage_shares,
                            lie_in_unmasking=args.lie_in_unmasking)
        agent.run(_stop_on_signals())
    except GenofedError as exc:
        print(f"faulty_agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def spawn(config: Path, log_file: Path, *, dump_deltas: bool = False,
          die_after: str | None = None, hang_after: str | None = None,
          corrupt_share: int | None = None, poison: Sequence[str] = (),
          zero_key: bool = False, garbage_shares: bool = False,
          lie_in_unmasking: bool = False) -> subprocess.Popen[bytes]:
    """Start this script for `config` in its own process, stdout and stderr to `log_file`."""
    argv = [sys.executable, str(SCRIPT), "--config", str(config), "--log-level", "info"]
    if dump_deltas:
        argv.append("--dump-deltas")
    if die_after is not None:
        argv += ["--die-after", die_after]
    if hang_after is not None:
        argv += ["--hang-after", hang_after]
    if corrupt_share is not None:
        argv += ["--corrupt-share", str(corrupt_share)]
    if poison:
        argv += ["--poison", ",".join(poison)]
    if zero_key:
        argv.append("--zero-key")
    if garbage_shares:
        argv.append("--garbage-shares")
    if lie_in_unmasking:
        argv.append("--lie-in-unmasking")
    with log_file.open("wb") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)


if __name__ == "__main__":
    raise SystemExit(main())

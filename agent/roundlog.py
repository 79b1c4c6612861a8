"""The daemon's account of each round it joins: its cost, its audit entry, its status line.

One `RoundLog` lives as long as the daemon; `opened` starts a round's meter, `sent` and
`received` count its messages, `closed` writes the round's cost (`costs.jsonl`), its audit
entry (what left the device: bytes and messages, to which topic, for which task and model)
and the status, and logs one line at the default level (`genofed.agent.rounds`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from genofed.agent import consent, costs
from genofed.agent.costs import RoundMeter
from genofed.agent.status import StatusBoard
from genofed.errors import GenofedError

progress = logging.getLogger("genofed.agent.rounds")  # shown at the default log level


class RoundLog:
    def __init__(self, state_dir: Path, board: StatusBoard, outbox: str,
                 sensors_root: Path = Path("/")) -> None:
        self.state_dir = state_dir
        self.board = board
        self.outbox = outbox
        self.sensors_root = sensors_root
        self.meter: RoundMeter | None = None
        self.digest = ""
        self.model_version: int | None = None
        self.epsilon: float | None = None  # the round's privacy cost (`ledger.py`), if DP

    def opened(self, round_: int, digest: str, model_version: int, examples: int) -> None:
        if self.meter is not None:
            self.closed("left unfinished (a newer round began)")
        self.meter = RoundMeter(round_, root=self.sensors_root)
        self.digest, self.model_version, self.epsilon = digest, model_version, None
        self.board.update(state=f"training for round {round_}", current_round=round_)
        progress.info("round %d: training on %d examples from model version %d", round_,
                      examples, model_version)

    def phase(self, name: str) -> None:
        if self.meter is not None:
            self.meter.phase(name)

    def sent(self, n: int) -> None:
        if self.meter is not None:
            self.meter.sent(n)

    def received(self, n: int) -> None:
        if self.meter is not None:
            self.meter.received(n)

    def spent(self, epsilon: float) -> None:
        self.epsilon = epsilon

    def joined(self) -> None:
        if self.meter is not None:
            self.board.update(state=f"in round {self.meter.round}")
            progress.info("round %d: joined (advertisement sent)", self.meter.round)

    def closed(self, outcome: str) -> None:
        """The round ended for this device: `outcome` in words."""
        m, self.meter = self.meter, None
        if m is None:
            return
        row = m.finish(outcome)
        try:
            costs.record(self.state_dir, row)
            consent.append(self.state_dir, "contribution", {
                "round": m.round, "task_digest": self.digest,
                "model_version": self.model_version, "outcome": outcome,
                "topic": self.outbox, "bytes_up": m.bytes_up, "messages_up": m.messages_up,
                "bytes_down": m.bytes_down, "messages_down": m.messages_down,
                "epsilon": self.epsilon})
        except (OSError, GenofedError) as exc:
            progress.error("round %d: cannot write its cost and audit entry: %s", m.round, exc)
        self.board.update(state="idle", current_round=None, last_round={
            "round": m.round, "outcome": outcome, "at": row["at"],
            "bytes_up": m.bytes_up, "bytes_down": m.bytes_down})
        progress.info("round %d: %s; %d bytes up, %d down, %.2f s, %.2f CPU s", m.round,
                      outcome, m.bytes_up, m.bytes_down, row["wall_s"], row["cpu_s"])

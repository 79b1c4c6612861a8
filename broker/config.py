"""The aggregator's configuration file (TOML), validated when it is loaded.

    federation = "demo"
    bundle = "bundle"
    state_dir = "state/aggregator"
    metrics_port = 9464        # Prometheus metrics on 127.0.0.1; 0 or absent = off

    [broker]
    host = "127.0.0.1"
    port = 1883

    [rounds]
    rounds = 10
    min_updates = 3
    target_updates = 6
    round_timeout_s = 120
    local_epochs = 2
    batch_size = 32
    lr = 0.05
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genofed import config
from genofed.broker.rounds import RoundPolicy
from genofed.protocol.topics import check_name
from genofed.protocol.transport import BrokerAddress


@dataclass(frozen=True)
class AggregatorConfig:
    federation: str
    bundle: Path
    state_dir: Path
    broker: BrokerAddress = field(default_factory=BrokerAddress)
    rounds: RoundPolicy = field(default_factory=RoundPolicy)
    metrics_port: int = 0  # Prometheus /metrics on 127.0.0.1:<port>; 0 = off

    def __post_init__(self) -> None:
        check_name("federation", self.federation)
        if not 0 <= self.metrics_port < 65536:
            raise ValueError(f"metrics_port must be 0 (off) or 1-65535, got {self.metrics_port}")


def load_aggregator_config(path: str | Path) -> AggregatorConfig:
    """Load and validate an aggregator config; errors name the file and the key."""
    return config.load(AggregatorConfig, path)

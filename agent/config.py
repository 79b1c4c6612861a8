"""The agent's configuration file (TOML), validated when it is loaded.

    device_id = "dev00"
    federation = "demo"
    bundle = "/var/lib/genofed/bundle"
    vcf = "/data/calls.vcf.gz"
    phenotypes = "/data/phenotypes.tsv"
    state_dir = "/var/lib/genofed"                     # the default; identity.key, status.json
    aggregator_key = "/etc/genofed/aggregator.pub"     # drop tasks and models it did not sign
    coordinator_key = "/etc/genofed/coordinator.pub"   # refuse bundles it did not sign

    [broker]
    host = "127.0.0.1"
    port = 1883

    [training]
    threads = 1
    seed = 0
    min_match_rate = 0.75
    backend = "step"        # "step" (stock onnxruntime) or "ort-training" (onnxruntime-training)

    [conditions]            # optional: when the device may take part (agent/conditions.py)
    hours = "22:00-06:30"
    max_temperature_c = 70.0

The round's task names the local optimizer (sgd, sgd_momentum or adam); the device trains
with that optimizer's step graph, or with the bundle's ORT artifacts for "ort-training".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genofed import config
from genofed.agent.conditions import ConditionsSection
from genofed.agent.trainer import BACKENDS
from genofed.errors import LocalInputError
from genofed.protocol.topics import check_name
from genofed.transport.mqtt import BrokerAddress

DEFAULT_STATE_DIR = Path("/var/lib/genofed")


@dataclass(frozen=True)
class TrainingSection:
    threads: int = 1
    seed: int = 0
    min_match_rate: float = 0.75
    backend: str = "step"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise LocalInputError(f"backend must be one of {', '.join(BACKENDS)}, "
                             f"got {self.backend!r}")
        if self.threads < 1:
            raise LocalInputError(f"[training] threads must be >= 1, got {self.threads}")
        if not 0.0 <= self.min_match_rate <= 1.0:
            raise LocalInputError(f"[training] min_match_rate must be in [0, 1], "
                             f"got {self.min_match_rate}")


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    federation: str
    bundle: Path
    vcf: Path
    phenotypes: Path
    aggregator_key: Path
    state_dir: Path = DEFAULT_STATE_DIR  # the service's StateDirectory=genofed
    broker: BrokerAddress = field(default_factory=BrokerAddress)
    training: TrainingSection = field(default_factory=TrainingSection)
    exit_when_finished: bool = False
    coordinator_key: Path | None = None
    conditions: ConditionsSection = field(default_factory=ConditionsSection)

    def __post_init__(self) -> None:
        check_name("device_id", self.device_id)
        check_name("federation", self.federation)


def identity_path(cfg: AgentConfig) -> Path:
    """The device's Ed25519 identity key file (made by `genofed agent enroll`)."""
    return cfg.state_dir / "identity.key"


def load_agent_config(path: str | Path) -> AgentConfig:
    """Load and validate an agent config; errors name the file and the key. The "ort-training"
    backend needs onnxruntime-training installed here: without it, that is an error too."""
    cfg = config.load(AgentConfig, path)
    if cfg.training.backend == "ort-training":
        from genofed.agent.ort_training import training_api

        try:
            training_api()
        except LocalInputError as exc:
            raise LocalInputError(f"{path}: [training] backend = \"ort-training\": {exc}") from None
    return cfg

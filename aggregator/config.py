"""The aggregator's configuration file (TOML), validated when it is loaded.

    federation = "demo"
    bundle = "bundle"
    state_dir = "state/aggregator"   # aggregator.db and identity.key (made on first start)
    metrics_port = 9464              # Prometheus metrics on 127.0.0.1; 0 or absent = off

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca = "broker/ca.crt"
    cert = "broker/clients/aggregator.crt"
    key = "broker/clients/aggregator.key"

    [rounds]
    rounds = 10            # completed rounds to run
    stage_timeout_s = 60   # deadline of each SecAgg+ stage (the first includes training)
    close_on_offline = false  # close a stage early once all it awaits are offline
    retry_s = 2            # wait before retrying when too few devices are online
    local_epochs = 2
    batch_size = 32
    lr = 0.05
    optimizer = "sgd"      # devices' local optimizer: sgd, sgd_momentum or adam (in the bundle)

    [cohort]
    min_participants = 3
    max_participants = 100
    sampling_rate = 1.0
    sideline_after = 2     # rest a device picked in this many rounds in a row that sent nothing
    sideline_s = 60        # for this long (doubling with each further silent round, <= 1 h)

    [secagg]
    corrupt_fraction = 0.1
    dropout_fraction = 0.3

    [codec]
    clip = 10.0            # L2 bound of one update, and of the mean (the aggregate check)
    scale = 1e6

    [server]
    optimizer = "fedavg"   # or "fedadam"; with [privacy] unit = "device", fedavg (and a
    lr = 1.0               # larger lr): FedAdam steps every noise-only coordinate as far as a
                           # causal one (benchmarks/privacy_utility.py: 0.726 against 0.757)

    [store]                # absent: SQLite, state_dir/aggregator.db
    url = "postgresql://genofed@db.example.org/genofed"   # PostgreSQL (psycopg 3) instead
    lease_s = 10           # PostgreSQL: an active/standby pair's lease (see lease.py)

    [study]                # the data use every task declares; devices join only what their
    name = "PGS-T2D"       # owner consented to (`genofed agent consent grant --duo ...`)
    duo = ["HMB", "IRB"]   # GA4GH DUO codes, short form or DUO:0000042

    [privacy]              # absent: secure aggregation only, no differential privacy
    epsilon = 1.0          # the federation's target over all rounds, per unit (the noise
    delta = 1e-5           # is calibrated so that `rounds` rounds spend it); absent: 1 per
                           # device, 2 per record (DEFAULT_EPSILON); 0: DP off
    unit = "device"        # "device": user-level, Skellam noise in the codec (cross-device);
                           # "record": record-level DP-SGD on each device (cross-silo)
    sample_rate = 0.05     # "record": the probability each record joins a DP-SGD step
    clip = 1.0             # "record": each record's gradient is clipped to this L2 norm
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genofed import config
from genofed.aggregator.cohort import CohortPolicy
from genofed.aggregator.optimizers import ServerOptimizer
from genofed.errors import LocalInputError
from genofed.protocol.privacyspec import DEFAULT_EPSILON
from genofed.protocol.roundspec import TrainingSpec
from genofed.protocol.schema import check_duo
from genofed.protocol.topics import check_name
from genofed.transport.mqtt import BrokerAddress


@dataclass(frozen=True)
class RoundsSection:
    rounds: int = 5
    stage_timeout_s: float = 60.0
    retry_s: float = 2.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    # close a stage once every device still awaited is offline (its will fired), instead of
    # waiting out the deadline: a device that loses its connection for a moment and comes
    # back within the deadline is a dropout then (`secure_round.SecureRound.poll`)
    close_on_offline: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise LocalInputError(f"[rounds] rounds must be >= 1, got {self.rounds}")
        if not self.stage_timeout_s > 0 or not self.retry_s > 0:
            raise LocalInputError("[rounds] stage_timeout_s and retry_s must be > 0")
        self.training()  # validates local_epochs, batch_size, lr, optimizer

    def training(self) -> TrainingSpec:
        return TrainingSpec(self.local_epochs, self.batch_size, self.lr, self.optimizer)


@dataclass(frozen=True)
class SecAggSection:
    corrupt_fraction: float = 0.1
    dropout_fraction: float = 0.3


@dataclass(frozen=True)
class CodecSection:
    clip: float = 10.0
    scale: float = 1e6

    def __post_init__(self) -> None:
        if not self.clip > 0 or not self.scale > 0:
            raise LocalInputError("[codec] clip and scale must be > 0")


@dataclass(frozen=True)
class ServerSection:
    optimizer: str = "fedavg"
    lr: float = 1.0

    def __post_init__(self) -> None:
        self.optimizer_spec()

    def optimizer_spec(self) -> ServerOptimizer:
        return ServerOptimizer(name=self.optimizer, lr=self.lr)


@dataclass(frozen=True)
class StoreSection:
    """Where the state lives: "" is SQLite in `state_dir`; a `postgresql://` URL (libpq's
    form: user, host, port, database, `?sslmode=...`) is PostgreSQL, where aggregators of
    one federation take turns as active under a lease of `lease_s` seconds."""

    url: str = ""
    lease_s: float = 10.0

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("postgresql://", "postgres://")):
            raise LocalInputError(f"[store] url must be empty (SQLite in state_dir) or a "
                                  f"postgresql:// URL, got {self.url.split('@')[-1]!r}")
        if not 1.0 <= self.lease_s <= 3600:
            raise LocalInputError(f"[store] lease_s must be 1-3600 s, got {self.lease_s}")


@dataclass(frozen=True)
class StudySection:
    """`[study]`: the data use every task declares (`protocol/schema.DataUse`)."""

    name: str = ""
    duo: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_duo(self.duo, "[study] duo")


@dataclass(frozen=True)
class PrivacySection:
    """`[privacy]`: differential privacy, off when the section is absent or epsilon is 0; a
    section without epsilon targets the unit's default (`privacyspec.DEFAULT_EPSILON`, chosen
    by the red team: 1 per device, 2 per record). `unit = "device"`
    (cross-device, user-level): each device adds Skellam noise inside the codec, calibrated so
    that `[rounds] rounds` rounds, each at its fewest accepted survivors, spend `epsilon` at
    `delta` with no amplification by the cohort's sampling assumed. `unit = "record"`
    (cross-silo, record-level): each device trains with DP-SGD (records clipped to `clip`,
    Poisson-sampled at `sample_rate`), its noise multiplier calibrated so that every step of
    every round spends `epsilon` per record (`aggregator/privacy.py`)."""

    epsilon: float | None = None  # None: the unit's default
    delta: float = 1e-5
    unit: str = "device"
    sample_rate: float = 0.05
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.unit not in DEFAULT_EPSILON:
            raise LocalInputError(f"[privacy] unit must be \"device\" or \"record\", got "
                                  f"{self.unit!r}")
        if not (0 < self.sample_rate <= 1 and 0 < self.clip < 1e6):
            raise LocalInputError(f"[privacy] sample_rate must be in (0, 1] and clip > 0, got "
                                  f"{self.sample_rate} and {self.clip}")
        if not (0 <= self.target <= 100):
            raise LocalInputError(f"[privacy] epsilon must be 0 (off) or in (0, 100], got "
                                  f"{self.epsilon}")
        if not 0 < self.delta < 1e-2:
            raise LocalInputError(f"[privacy] delta must be in (0, 0.01), got {self.delta}")

    @property
    def target(self) -> float:
        """The epsilon the federation targets: the one named, or the unit's default."""
        return DEFAULT_EPSILON[self.unit] if self.epsilon is None else self.epsilon

    @property
    def on(self) -> bool:
        return self.target > 0


@dataclass(frozen=True)
class AggregatorConfig:
    federation: str
    bundle: Path
    state_dir: Path
    broker: BrokerAddress = field(default_factory=BrokerAddress)
    rounds: RoundsSection = field(default_factory=RoundsSection)
    cohort: CohortPolicy = field(default_factory=CohortPolicy)
    secagg: SecAggSection = field(default_factory=SecAggSection)
    codec: CodecSection = field(default_factory=CodecSection)
    server: ServerSection = field(default_factory=ServerSection)
    store: StoreSection = field(default_factory=StoreSection)
    study: StudySection = field(default_factory=StudySection)
    privacy: PrivacySection = field(default_factory=lambda: PrivacySection(epsilon=0.0))
    metrics_port: int = 0  # Prometheus /metrics on 127.0.0.1:<port>; 0 = off

    def __post_init__(self) -> None:
        check_name("federation", self.federation)
        if not 0 <= self.metrics_port < 65536:
            raise LocalInputError(f"metrics_port must be 0 (off) or 1-65535, got "
                                  f"{self.metrics_port}")


def load_aggregator_config(path: str | Path) -> AggregatorConfig:
    """Load and validate an aggregator config; errors name the file and the key."""
    return config.load(AggregatorConfig, path)

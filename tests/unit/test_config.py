"""Config files: one line naming the file and the key for every mistake."""

from pathlib import Path

import pytest

from genofed.agent.config import load_agent_config
from genofed.aggregator.config import load_aggregator_config
from genofed.errors import GenofedError

GOOD = """device_id = "dev00"
federation = "demo"
bundle = "bundle"
vcf = "/data/calls.vcf.gz"
phenotypes = "pheno.tsv"
state_dir = "state"
aggregator_key = "aggregator.pub"
[broker]
port = 1884
[training]
threads = 2
"""


def test_good_agent_config(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(GOOD)
    cfg = load_agent_config(p)
    assert cfg.device_id == "dev00" and cfg.broker.port == 1884 and cfg.training.threads == 2
    assert cfg.bundle == tmp_path / "bundle"  # relative to the config file
    assert str(cfg.vcf) == "/data/calls.vcf.gz"
    assert cfg.training.min_match_rate == 0.75
    assert cfg.training.backend == "step"


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("threads = 2", "threads = 0"), "threads must be >= 1"),
    (GOOD.replace("threads = 2", 'threads = "two"'), "[training] threads must be an integer"),
    (GOOD.replace("port = 1884", "port = 70000"), "port must be 1-65535"),
    (GOOD.replace('vcf = "/data/calls.vcf.gz"\n', ""), "missing required key 'vcf'"),
    (GOOD.replace('aggregator_key = "aggregator.pub"\n', ""),
     "missing required key 'aggregator_key'"),
    (GOOD.replace("threads = 2", "thread = 2"), "unknown key 'thread'"),
    (GOOD.replace('device_id = "dev00"', 'device_id = "dev/00"'), "device_id"),
    (GOOD + "[[", "not valid TOML"),
    (GOOD + 'backend = "ort"\n',
     "[training] backend must be one of step, ort-training, got 'ort'"),
    (GOOD + "backend = 1\n", "[training] backend must be a string"),
])
def test_bad_agent_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    with pytest.raises(GenofedError) as err:
        load_agent_config(p)
    assert message in str(err.value) and str(p) in str(err.value)
    assert "\n" not in str(err.value)


def test_ort_training_backend_needs_the_package_here(tmp_path: Path) -> None:
    """Where onnxruntime-training is installed the backend loads; where it is not (the device
    profile's stock onnxruntime) the config is refused in one line naming file and key."""
    from genofed.agent.ort_training import training_api

    p = tmp_path / "agent.toml"
    p.write_text(GOOD + 'backend = "ort-training"\n')
    try:
        training_api()
    except GenofedError:
        with pytest.raises(GenofedError) as err:
            load_agent_config(p)
        msg = str(err.value)
        assert msg.startswith(f'{p}: [training] backend = "ort-training": ')
        assert "not installed" in msg and "\n" not in msg
    else:
        assert load_agent_config(p).training.backend == "ort-training"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="config file not found"):
        load_agent_config(tmp_path / "nope.toml")


def test_aggregator_config(tmp_path: Path) -> None:
    p = tmp_path / "agg.toml"
    p.write_text('federation = "x"\nbundle = "b"\nstate_dir = "s"\n'
                 "[cohort]\nmin_participants = 4\nmax_participants = 2\n")
    with pytest.raises(GenofedError, match="min_participants"):
        load_aggregator_config(p)
    p.write_text('federation = "x"\nbundle = "b"\nstate_dir = "s"\n[server]\n'
                 'optimizer = "sgd"\n')
    with pytest.raises(GenofedError, match=r"\[server\].*fedavg or fedadam"):
        load_aggregator_config(p)
    p.write_text('federation = "x"\nbundle = "b"\nstate_dir = "s"\n[rounds]\nrounds = 3\n'
                 '[server]\noptimizer = "fedadam"\nlr = 0.01\n[codec]\nclip = 5.0\n')
    cfg = load_aggregator_config(p)
    assert cfg.rounds.rounds == 3 and cfg.server.optimizer == "fedadam"
    assert cfg.codec.clip == 5.0 and cfg.cohort.min_participants == 3
    assert cfg.rounds.training().optimizer == "sgd"


def test_aggregator_privacy_defaults(tmp_path: Path) -> None:
    """No [privacy]: DP off. A [privacy] without epsilon: the unit's default (1 per device,
    2 per record, chosen by the red team); epsilon 0: off; one named: that one."""
    p = tmp_path / "agg.toml"
    base = 'federation = "x"\nbundle = "b"\nstate_dir = "s"\n'
    p.write_text(base)
    assert not load_aggregator_config(p).privacy.on
    for section, target in (("", 1.0), ('unit = "device"\n', 1.0), ('unit = "record"\n', 2.0),
                            ("epsilon = 0\n", 0.0), ('epsilon = 3\nunit = "record"\n', 3.0)):
        p.write_text(base + "[privacy]\n" + section)
        privacy = load_aggregator_config(p).privacy
        assert (privacy.target, privacy.on) == (target, target > 0), section
    p.write_text(base + "[privacy]\nepsilon = -1\n")
    with pytest.raises(GenofedError, match=r"\[privacy\] epsilon must be 0"):
        load_aggregator_config(p)


@pytest.mark.parametrize("value, message", [
    ('"adagrad"', "[rounds] training optimizer must be one of sgd, sgd_momentum, adam, "
                  "got 'adagrad'"),
    ("2", "[rounds] optimizer must be a string, got 2"),
])
def test_aggregator_local_optimizer(tmp_path: Path, value: str, message: str) -> None:
    p = tmp_path / "agg.toml"
    p.write_text('federation = "x"\nbundle = "b"\nstate_dir = "s"\n[rounds]\n'
                 'optimizer = "adam"\nlr = 0.01\n')
    assert load_aggregator_config(p).rounds.training().optimizer == "adam"
    p.write_text(f'federation = "x"\nbundle = "b"\nstate_dir = "s"\n[rounds]\n'
                 f"optimizer = {value}\n")
    with pytest.raises(GenofedError) as err:
        load_aggregator_config(p)
    assert str(err.value).startswith(f"{p}: ") and message in str(err.value)


@pytest.mark.parametrize("argv, epsilon", [
    ([], None), (["--dp"], 2.0), (["--dp", "--dp-unit", "device"], 1.0),
    (["--dp", "4"], 4.0), (["--dp", "0.5", "--dp-unit", "device"], 0.5),
])
def test_demo_dp_epsilon(argv: list[str], epsilon: float | None) -> None:
    """`genofed demo --dp` alone takes the unit's default (record: 2, device: 1)."""
    from genofed.cli.main import build_parser, demo_epsilon

    assert demo_epsilon(build_parser().parse_args(["demo", *argv])) == epsilon

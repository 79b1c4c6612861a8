"""Config files: one line naming the file and the key for every mistake."""

from pathlib import Path

import pytest

from genofed.agent.config import load_agent_config
from genofed.broker.config import load_aggregator_config
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
])
def test_bad_agent_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    with pytest.raises(GenofedError) as err:
        load_agent_config(p)
    assert message in str(err.value) and str(p) in str(err.value)
    assert "\n" not in str(err.value)


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

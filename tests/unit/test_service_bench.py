"""`genofed agent bench`: one whole round of this device's own code, its peers simulated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.agents import agent_config

from genofed.cli import main as cli


def test_bench_measures_a_whole_round(tmp_path: Path, cohort: Path, logreg_bundle: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = agent_config(tmp_path, cohort, logreg_bundle, "step")
    assert cli.main(["agent", "bench", "--config", str(cfg), "--devices", "4", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["outcome"] == "bench: answered every stage"
    assert list(row["phases_s"]) == ["read", "train", "join", "secure_aggregation"]
    assert row["samples"] == 80 and row["devices"] == 4 and row["model_version"] is None
    # Its own messages: an advertisement and one answer for each of the four later stages.
    assert row["messages_up"] == 5 and row["messages_down"] == 4
    assert row["bytes_up"] > 0 and row["bytes_down"] > 0
    assert 0 < row["cpu_s"] <= row["cpu_s_process"]
    assert row["peak_rss_mb"] > 0 and "unreadable" in row
    assert cli.main(["agent", "bench", "--config", str(cfg), "--devices", "3"]) == 0
    out = capsys.readouterr().out
    assert "secure_aggregation" in out and "bytes up / down" in out
    assert cli.main(["agent", "bench", "--config", str(cfg), "--devices", "2"]) == 1

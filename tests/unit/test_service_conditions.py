"""The owner's participation conditions: the check (pure), and a device outside them saying
it is offline instead of being picked and dropping out."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.agents import agent_config

from genofed.agent.conditions import ConditionsSection, Readings, unmet
from genofed.agent.config import load_agent_config
from genofed.agent.daemon import Agent
from genofed.errors import LocalInputError


def _r(minute: int = 0, temp: float | None = None, load: float | None = None,
       throttled: int | None = None) -> Readings:
    return Readings(minute=minute, temperature_c=temp, load=load, throttled=throttled)


def test_hours_window_wrapping_midnight() -> None:
    night = ConditionsSection(hours="22:00-06:30")
    assert unmet(night, _r(23 * 60)) is None and unmet(night, _r(6 * 60 + 29)) is None
    assert unmet(night, _r(6 * 60 + 30)) == "outside the hours 22:00-06:30"
    assert unmet(night, _r(12 * 60)) is not None
    day = ConditionsSection(hours="09-17")
    assert unmet(day, _r(9 * 60)) is None and unmet(day, _r(17 * 60)) is not None


def test_temperature_load_and_throttling() -> None:
    c = ConditionsSection(max_temperature_c=70.0, max_load=2.0, pause_when_throttled=True)
    assert unmet(c, _r(temp=65.0, load=1.0, throttled=0x50000)) is None  # only in the past
    assert unmet(c, _r(temp=72.5)) == "72.5 C, above 70.0 C"
    assert unmet(c, _r(load=3.0)) == "load 3.00, above 2.00"
    assert unmet(c, _r(throttled=0x4)) == "throttled: now: throttled"
    # A sensor the device lacks does not hold it back.
    assert unmet(c, _r(temp=None, load=None, throttled=None)) is None
    assert not ConditionsSection().any


@pytest.mark.parametrize("hours", ["22", "25:00-01:00", "ab-cd"])
def test_bad_hours_are_one_clear_error(hours: str) -> None:
    with pytest.raises(LocalInputError, match=r"\[conditions\] hours"):
        ConditionsSection(hours=hours)


class Link:
    """Stands for MqttLink: records what would be published."""

    def __init__(self) -> None:
        self.birth = None
        self.published: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.published.append((topic, payload, retain))


def test_a_device_outside_its_conditions_says_it_is_offline(
        tmp_path: Path, cohort: Path, logreg_bundle: Path) -> None:
    cfg_path = agent_config(tmp_path, cohort, logreg_bundle, "step")
    cfg_path.write_text(cfg_path.read_text() + "[conditions]\nmax_load = 0.000001\n")
    agent = Agent(load_agent_config(cfg_path), config_path=cfg_path)
    assert (agent.unavailable() or "").startswith("load ")
    link = Link()
    agent._announce(link)  # type: ignore[arg-type]
    assert [(t.rsplit("/", 1)[1], b'"offline"' in p, r) for t, p, r in link.published] == \
        [("status", True, True)]
    assert b'"offline"' in agent._presence().payload  # and on every reconnection
    agent._announce(link)  # type: ignore[arg-type]
    assert len(link.published) == 1  # said once, not every turn of the loop
    assert agent.board.doc["availability"].startswith("unavailable: load")

"""`genofed agent status`: the epsilon this device spent, against its owner's caps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.agents import agent_config

from genofed.agent import consent, ledger
from genofed.agent.config import load_agent_config
from genofed.agent.status import epsilon_vs_caps
from genofed.aggregator.config import AggregatorConfig, PrivacySection, RoundsSection, StudySection
from genofed.aggregator.privacy import PrivacyLedger
from genofed.aggregator.rounds import RoundRandom, plan_round
from genofed.cli import main as cli
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import SigningIdentity

AGG = SigningIdentity.generate()
DEVICES = {f"dev{i:02d}": SigningIdentity.generate() for i in range(6)}


def _task(number: int, study: str) -> SecureTask:
    """A DP round as the aggregator plans it and a device opens it."""
    cfg = AggregatorConfig(federation="fed", bundle=Path("b"), state_dir=Path("s"),
                           rounds=RoundsSection(rounds=4),
                           privacy=PrivacySection(epsilon=4.0, delta=1e-5),
                           study=StudySection(name=study))
    random = RoundRandom(np.random.default_rng(number), lambda: bytes([number]) * 32)
    task = plan_round(cfg, number, number, {d: k.public.raw for d, k in DEVICES.items()},
                      AGG.public, 60, random, privacy=PrivacyLedger(4.0, 1e-5))
    return SecureTask.open(task.seal(AGG), AGG.public, "fed")


def test_status_shows_the_epsilon_spent_against_the_owners_caps(
        tmp_path: Path, cohort: Path, logreg_bundle: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = agent_config(tmp_path, cohort, logreg_bundle, "step")
    state = load_agent_config(cfg_path).state_dir
    assert epsilon_vs_caps(state, None, None)["text"] == "none spent (no cap in total, " \
        "no cap per study)"
    consent.set_consent(state, "granted", epsilon_cap=10.0, study_epsilon_cap=4.0)
    for number, study in ((0, "PGS-T2D"), (1, "PGS-T2D"), (2, "other")):
        ledger.record(state, _task(number, study))
    spent = ledger.spent(state)
    total, t2d = spent.epsilon(1e-5), spent.epsilon(1e-5, "PGS-T2D")
    assert 0 < t2d < total
    assert cli.main(["agent", "status", "--config", str(cfg_path), "--json"]) == 0
    eps = json.loads(capsys.readouterr().out)["epsilon"]
    assert (eps["cap"], eps["study_cap"], eps["delta"]) == (10.0, 4.0, 1e-5)
    assert eps["units"]["device"]["total"] == pytest.approx(total)
    assert eps["units"]["device"]["by_study"]["PGS-T2D"] == pytest.approx(t2d)
    assert cli.main(["agent", "status", "--config", str(cfg_path)]) == 0
    text = capsys.readouterr().out
    want = (f"epsilon vs cap: device: {total:.3g} of cap 10 ({total / 10:.0%}) in total, "
            f"{t2d:.3g} of cap 4 ({t2d / 4:.0%}) in study PGS-T2D")
    assert want in text, text
    # a damaged ledger is said so, never read as nothing spent
    audit = consent.audit_path(state)
    audit.write_text(audit.read_text().replace('"PGS-T2D"', '"PGS-T2E"', 1))
    assert "ledger unreadable" in epsilon_vs_caps(state, 10.0, 4.0)["text"]

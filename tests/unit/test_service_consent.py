"""The owner's consent record and the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genofed.agent import consent
from genofed.errors import LocalInputError, MessageError
from genofed.protocol.schema import DataUse, SecureTask
from genofed.protocol.secagg import SigningIdentity


def test_without_a_record_the_configuration_stands(tmp_path: Path) -> None:
    c = consent.read_consent(tmp_path)
    assert c.allows_joining(0.0) and not c.recorded
    assert "no consent record" in c.describe(0.0)


def test_grant_pause_withdraw(tmp_path: Path) -> None:
    g = consent.set_consent(tmp_path, "granted", expires=2000.0, now=1000.0)
    assert g.allows_joining(1500.0) and not g.allows_joining(2000.0)  # expired
    assert "expired" in consent.read_consent(tmp_path).describe(2500.0)
    p = consent.set_consent(tmp_path, "paused", now=1100.0)
    assert not p.allows_joining(1200.0) and p.allows_staying()  # the round in flight ends
    w = consent.set_consent(tmp_path, "withdrawn", now=1200.0)
    assert not w.allows_joining(1300.0) and not w.allows_staying()  # leaves it at once
    assert consent.read_consent(tmp_path) == w
    entries, problems = consent.verify(tmp_path)
    assert problems == []
    assert [e["state"] for e in entries] == ["granted", "paused", "withdrawn"]


def test_a_damaged_record_is_never_taken_as_consent(tmp_path: Path) -> None:
    consent.consent_path(tmp_path).write_text('{"state": "granted"')
    with pytest.raises(LocalInputError, match=r"consent\.json"):
        consent.read_consent(tmp_path)
    consent.consent_path(tmp_path).write_text('{"state": "yes", "changed": 1}')
    with pytest.raises(LocalInputError, match="not one of"):
        consent.read_consent(tmp_path)


def test_expiry_in_the_past_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalInputError, match="past"):
        consent.set_consent(tmp_path, "granted", expires=10.0, now=20.0)


def _log(tmp_path: Path, n: int = 4) -> list[str]:
    for r in range(n):
        consent.append(tmp_path, "contribution", {"round": r, "bytes_up": 100 + r})
    return consent.audit_path(tmp_path).read_text().splitlines()


def test_the_intact_chain_verifies(tmp_path: Path) -> None:
    _log(tmp_path)
    entries, problems = consent.verify(tmp_path)
    assert problems == [] and [e["seq"] for e in entries] == [1, 2, 3, 4]


def test_an_edited_entry_is_detected(tmp_path: Path) -> None:
    lines = _log(tmp_path)
    e = json.loads(lines[1])
    e["bytes_up"] = 1  # "less left my device than it did"
    lines[1] = json.dumps(e, sort_keys=True)
    consent.audit_path(tmp_path).write_text("\n".join(lines) + "\n")
    _, problems = consent.verify(tmp_path)
    assert any("entry 2 was changed" in p for p in problems), problems


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(tmp_path: Path) -> None:
    lines = _log(tmp_path)
    e = json.loads(lines[1])
    e["bytes_up"] = 1
    e["hash"] = consent.entry_hash(e)
    lines[1] = json.dumps(e, sort_keys=True)
    consent.audit_path(tmp_path).write_text("\n".join(lines) + "\n")
    _, problems = consent.verify(tmp_path)
    assert any("entry 3 does not link" in p for p in problems), problems


def test_a_removed_entry_is_detected(tmp_path: Path) -> None:
    lines = _log(tmp_path)
    consent.audit_path(tmp_path).write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    _, problems = consent.verify(tmp_path)
    assert any("entries removed" in p for p in problems), problems


def test_a_removed_last_entry_is_detected(tmp_path: Path) -> None:
    lines = _log(tmp_path)
    consent.audit_path(tmp_path).write_text("\n".join(lines[:-1]) + "\n")
    _, problems = consent.verify(tmp_path)
    assert any("removed from the end" in p for p in problems), problems


def test_the_consent_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from genofed.cli import main as cli

    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'device_id = "d"\nfederation = "f"\nbundle = "b"\nvcf = "v"\n'
                   f'phenotypes = "p"\naggregator_key = "k"\nstate_dir = "{tmp_path}"\n')
    run = ["agent", "consent", "--config", str(cfg)]
    assert cli.main([*run[:2], "show", *run[2:]]) == 0
    assert "no consent record" in capsys.readouterr().out
    assert cli.main([*run[:2], "grant", *run[2:], "--until", "2999-01-01"]) == 0
    assert "granted until 2999-01-01T00:00:00Z" in capsys.readouterr().out
    assert cli.main([*run[:2], "withdraw", *run[2:]]) == 0
    assert consent.read_consent(tmp_path).state == "withdrawn"
    assert cli.main([*run[:2], "grant", *run[2:], "--until", "tomorrow"]) == 1
    assert cli.main(["agent", "audit", "--config", str(cfg)]) == 0
    assert "2 entries; chain intact" in capsys.readouterr().out


def test_a_task_declaring_a_data_use_the_owner_did_not_agree_to_is_refused(
        tmp_path: Path) -> None:
    hmb = DataUse("PGS-T2D", ("HMB", "IRB"))
    assert consent.read_consent(tmp_path).refuses(DataUse()) is None  # declares nothing
    assert "your consent covers none (not HMB, IRB)" in str(
        consent.read_consent(tmp_path).refuses(hmb))  # no record: no data use agreed
    c = consent.set_consent(tmp_path, "granted", duo=("GRU", "HMB"), now=1000.0)
    assert c.refuses(hmb) == ("study 'PGS-T2D' declares data use HMB, IRB; your consent "
                              "covers GRU, HMB (not IRB)")
    assert c.refuses(DataUse("x", ("HMB",))) is None
    assert consent.read_consent(tmp_path) == c  # the codes survive the file
    assert "data use GRU, HMB" in c.describe(1000.0)
    entries, problems = consent.verify(tmp_path)
    assert problems == [] and entries[-1]["duo"] == ["GRU", "HMB"]
    with pytest.raises(LocalInputError, match="DUO codes"):
        consent.set_consent(tmp_path, "granted", duo=("general research",))


def test_the_data_use_travels_signed_in_the_task() -> None:
    ident = SigningIdentity.generate()
    task = SecureTask("fed", 3, "waiting", 1, use=DataUse("PGS-T2D", ("DS-CANCER", "NPU")))
    back = SecureTask.open(task.seal(ident), ident.public, "fed")
    assert back.use == task.use
    plain = SecureTask.open(SecureTask("fed", 3, "waiting", 1).seal(ident), ident.public, "fed")
    assert plain.use == DataUse()
    with pytest.raises(LocalInputError, match="DUO codes"):
        DataUse("x", ("hmb",))
    forged = task.seal(ident).replace(b"DS-CANCER", b"DS-CANCEX")
    with pytest.raises(MessageError):
        SecureTask.open(forged, ident.public, "fed")

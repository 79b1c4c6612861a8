"""The small version of `genofed bench privacy_utility`: every part runs (cross-device sweep in
both accountings, the agreement with the aggregator's secure round, cross-silo DP-SGD, the
step-time ratio) and writes its JSON, table and plot."""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import genofed

pytestmark = pytest.mark.coordinator

BENCH = Path(genofed.__file__).resolve().parent / "benchmarks"


def test_privacy_utility_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import genofed.cli.bench as bench

    monkeypatch.setenv("GENOFED_PRIVACY_UTILITY", "smoke")
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("privacy_utility", None)
    import privacy_utility

    privacy_utility.main()
    doc = json.loads((tmp_path / "privacy_utility_smoke.json").read_text())
    s, rows = doc["summary"], doc["rows"]
    for key in ("cross_device_auc_gap_eps2", "cross_silo_auc_gap_eps3", "cross_device_bits",
                "dpsgd_step_time_ratio"):
        assert math.isfinite(s[key]), key
    assert s["cross_device_bits"] <= 18
    # The fast path decodes what the secure round decodes, to within rounding.
    assert s["agree_max_abs_diff"] <= 10 * s["agree_rounding_sd"] < s["agree_max_abs_coordinate"]
    device = [r for r in rows if r["deployment"] == "cross-device" and r["model"] == "federated"]
    assert sorted({r["target_epsilon"] for r in device}) == [1, 2, 4, 8, math.inf]
    for r in device:
        if r["schedule"] == "one_pass" and math.isfinite(r["target_epsilon"]):
            assert r["epsilon_unamplified"] <= r["target_epsilon"] and r["epsilon_amplified"] \
                is None
        elif r["schedule"] == "sampled" and math.isfinite(r["target_epsilon"]):
            assert r["epsilon_amplified"] <= r["target_epsilon"] < r["epsilon_unamplified"]
    assert {r["schedule"] for r in device if r["target_epsilon"] == math.inf} == {
        "one_pass", "sampled"}  # the non-private run of each schedule
    for r in rows:  # every AUC comes with its AUC by ancestry
        assert all(r[k] is not None for k in ("auc", "auc_AFR", "auc_EUR", "auc_EAS", "auc_AMR",
                                              "auc_gap")), r
    silo = {r["model"]: r for r in rows if r["deployment"] == "cross-silo"}
    assert silo["federated_dpsgd"]["epsilon"] <= 3.0 and silo["federated_dpsgd"]["delta"] == 1e-5
    assert silo["distributed_dpsgd_design"]["epsilon"] == silo["federated_dpsgd"]["epsilon"]
    assert math.isfinite(s["cross_silo_auc_gap_eps3_distributed_design"])
    svg = ET.parse(tmp_path / "privacy_utility_smoke.svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) >= 2
    table = (tmp_path / "privacy_utility_smoke.txt").read_text().splitlines()
    assert table[0].split()[:3] == ["deployment", "model", "schedule"] and len(table) == \
        len(rows) + 1

"""The red team's report: `report.json` (every figure) and `report.html`, one page a privacy
officer reads in any browser without Python: the verdict, attack AUC against epsilon beside
the ceiling that epsilon allows, the model's AUC against epsilon, each setting's ROC curves,
and the tables with confidence intervals. Plots are inline SVG (`report_svg.py`); the page
loads nothing from anywhere.

The document (`redteam_sim.redteam` or `redteam_run.attack_run`) holds `settings`, each with
its `label`, `epsilon` (None: no DP), the ceilings, `model_auc` and `attacks` (name ->
party, auc, auc_ci, tpr, tpr_ci, roc).
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from genofed import atomic
from genofed.privacy.ceiling import profile_tpr_ceiling, tpr_ceiling
from genofed.privacy.report_svg import xy_plot

CSS = ("body{font-family:sans-serif;max-width:1180px;margin:1em auto;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
       "padding:2px 6px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}"
       ".bad{background:#fdd}.ok{background:#dfd}figure{display:inline-block;margin:4px}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def write_report(doc: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write `out/report.json` and `out/report.html`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    js, page = out / "report.json", out / "report.html"
    atomic.write_bytes(js, (json.dumps(doc, indent=1, default=_json_default) + "\n").encode())
    atomic.write_bytes(page, html(doc).encode())
    return js, page


def _eps(s: dict[str, Any]) -> str:
    e = s["epsilon"]
    return "none (no DP)" if e is None else f"{e:.3g}"


def _ci(v: float, ci: Any) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def verdicts(doc: dict[str, Any]) -> list[str]:
    """One line a setting: its strongest attack against the ceiling its epsilon allows."""
    lines = []
    for s in doc["settings"]:
        name = s["strongest_attack"]
        a = s["attacks"][name]
        within = ("within" if a["auc"] <= s["auc_ceiling_profile"] else
                  "BEATEN: a bug in the noise or the accounting")
        lines.append(f"{s['label']}: epsilon {_eps(s)}; strongest attack {name} AUC "
                     f"{_ci(a['auc'], a['auc_ci'])}, TPR {a['tpr']['0.001']:.2%} at 0.1% FPR; "
                     + ("no ceiling (no DP)" if s["epsilon"] is None else
                        f"ceiling for any attack AUC {s['auc_ceiling_profile']:.3f} "
                        f"({within})")
                     + f"; model test AUC {s['model_auc']:.3f}")
    return lines


def _by_epsilon(doc: dict[str, Any]) -> list[str]:
    ss = doc["settings"]
    xs = list(range(len(ss)))
    def tick(s: dict[str, Any]) -> str:
        e = "none" if s["epsilon"] is None else f"{s['epsilon']:.3g}"
        return e  # a run's settings are its rounds, in order (the axis says so)

    ticks = [(float(i), tick(s)) for i, s in enumerate(ss)]
    names = list(ss[0]["attacks"])
    series = {n: (xs, [s["attacks"][n]["auc"] for s in ss]) for n in names}
    ceil = [s["auc_ceiling_profile"] if s["epsilon"] is not None else math.nan for s in ss]
    ceil2 = [s["auc_ceiling"] if s["epsilon"] is not None else math.nan for s in ss]
    top = max(0.6, *(a for _, ys in series.values() for a in ys),
              *(c for c in ceil + ceil2 if math.isfinite(c))) + 0.03
    x_range = (-0.3, max(1, len(ss) - 1) + 0.3)
    x_label = "epsilon (per unit)" if doc["kind"] == "simulation" else \
        "epsilon spent after each round, rounds in order (per unit)"
    attack = xy_plot("Attack AUC against epsilon", series, x_label=x_label,
                     y_label="ROC AUC", x_range=x_range, y_range=(0.4, min(1.0, top)),
                     dashed={"ceiling (accountant's RDP)": (xs, ceil),
                             "ceiling (eps, delta)": (xs, ceil2),
                             "chance": ([x_range[0], x_range[1]], [0.5, 0.5])},
                     x_ticks=ticks)
    models = [s["model_auc"] for s in ss]
    model = xy_plot("Model test AUC against epsilon",
                    {"model (last released)": (xs, models)}, x_label=x_label,
                    y_label="test ROC AUC", x_range=x_range,
                    y_range=(min(0.45, *models) - 0.02, max(0.6, *models) + 0.02),
                    dashed={"chance": ([x_range[0], x_range[1]], [0.5, 0.5])}, x_ticks=ticks)
    return [attack, model]


def _roc(s: dict[str, Any]) -> str:
    ranked = sorted(s["attacks"], key=lambda n: -s["attacks"][n]["auc"])[:6]
    series = {f"{n} ({s['attacks'][n]['auc']:.3f})": tuple(s["attacks"][n]["roc"])
              for n in ranked}
    grid = np.geomspace(1e-4, 1, 60)
    dashed = {"chance": (grid.tolist(), grid.tolist())}
    if s["epsilon"] is not None:
        prof = [tuple(p) for p in s.get("profile") or [(s["epsilon"], s["delta"])]]
        dashed = {"ceiling (accountant's RDP)":
                  (grid.tolist(), profile_tpr_ceiling(grid, prof).tolist()),
                  f"ceiling ({s['epsilon']:.3g}, {s['delta']:g})":
                  (grid.tolist(), tpr_ceiling(grid, s["epsilon"], s["delta"]).tolist()),
                  **dashed}
    return xy_plot(f"ROC, {s['label']} (log FPR)", series, x_label="false-positive rate",
                   y_label="true-positive rate", x_range=(1e-4, 1.0), y_range=(0.0, 1.0),
                   log_x=True, dashed=dashed,
                   x_ticks=[(10.0 ** -k, f"1e-{k}" if k else "1") for k in range(4, -1, -1)])


def _table(s: dict[str, Any]) -> str:
    rows = ["<tr><th>attack</th><th>party</th><th>AUC [95% CI]</th><th>TPR at 1% FPR</th>"
            "<th>TPR at 0.1% FPR</th><th>within ceiling</th></tr>"]
    for name, a in sorted(s["attacks"].items(), key=lambda kv: -kv[1]["auc"]):
        ok = s["epsilon"] is None or a["auc"] <= s["auc_ceiling_profile"]
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{escape(a['party'])}</td>"
            f"<td>{_ci(a['auc'], a['auc_ci'])}</td>"
            f"<td>{_ci(a['tpr']['0.01'], a['tpr_ci']['0.01'])}</td>"
            f"<td>{_ci(a['tpr']['0.001'], a['tpr_ci']['0.001'])}</td>"
            f"<td class=\"{'ok' if ok else 'bad'}\">"
            f"{'-' if s['epsilon'] is None else 'yes' if ok else 'NO'}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def html(doc: dict[str, Any]) -> str:
    """The page."""
    ss = doc["settings"]
    head = (f"Simulated {doc['shape']['name']} federations: {doc['shape']['devices']} devices "
            f"a federation, {doc['shape']['rounds']} rounds, {doc['sites']} panel sites, "
            f"{doc['shape']['federations']} federations a pool (each attacked with the others "
            f"as shadows), {doc['shape']['pools']} pools (seeds; intervals are t intervals "
            "over them)" if doc["kind"] == "simulation" else doc.get("description", ""))
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>genofed red team"
             f"</title><style>{CSS}</style></head><body><h1>genofed privacy red team</h1>",
             f"<p>{escape(head)}. Members: the genomes a federation trained on; non-members: "
             "genomes of the same populations it never saw. The ceiling is the largest AUC "
             "any attack can reach against the epsilon the accountant claims (derivation in "
             "genofed/privacy/ceiling.py).</p><h2>Verdict</h2><ul>"]
    parts += [f"<li>{escape(v)}</li>" for v in verdicts(doc)]
    parts.append("</ul><h2>Against epsilon</h2>")
    parts += [f"<figure>{svg}</figure>" for svg in _by_epsilon(doc)]
    parts.append("<h2>ROC curves</h2>")
    parts += [f"<figure>{_roc(s)}</figure>" for s in ss]
    for s in ss:
        parts.append(f"<h2>{escape(s['label'])}</h2><p>epsilon {_eps(s)} at delta "
                     f"{s['delta']:g}" + ("" if s["epsilon"] is None else
                                          f"; AUC ceiling {s['auc_ceiling_profile']:.3f} "
                                          f"(accountant's RDP curve), {s['auc_ceiling']:.3f} "
                                          f"(the (eps, delta) pair alone); TPR ceiling at 0.1% "
                                          f"FPR {s['tpr_ceiling']['0.001']:.2%}")
                     + f"; model test AUC {_ci(s['model_auc'], s['model_auc_ci'])}</p>")
        parts.append(_table(s))
    parts.append("</body></html>\n")
    return "\n".join(parts)

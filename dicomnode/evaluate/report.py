"""``report.html``: one self-contained page (tables, plots inlined as base64 PNG) that opens offline.

Each headline figure is shown as the site's value with its bootstrap 95 % interval, and
beside it the corresponding published figure, labelled as the study's.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomnode.evaluate import plots
from dicomnode.evaluate.report_tables import cases_table, compare_table, headline_rows, matrix_table

__all__ = ["write_report"]

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}
.study{color:#555;font-style:italic}.err{color:#a00}.warn{background:#fff3cd;padding:.5em;border:1px solid #e0c060}
img{max-width:100%;margin:.3em}"""
_DEFINITIONS = """<h2>Definitions</h2><ul>
<li>ACC, SEN (sensitivity, recall), SPE (specificity): of the case-level call against the reference; n/a when the
reference has no positive (SEN) or no negative (SPE) case.</li>
<li>95 % CI: percentile bootstrap over cases (2000 resamples, fixed seed); n/a with fewer than 2 cases or when the
figure is undefined in most resamples.</li>
<li>Dice: 2|A∩B| / (|A|+|B|) of the model's and the reference masks per case; mean ± SD over cases, and pooled.</li>
<li>Patch level (WSI): a classifier patch is tumour when more than the stated fraction of it is annotated tumour;
weighted F1 weights the F1 of each class by its number of patches; ROC of the patch probabilities.</li>
<li>MRI nodes: a model node matches a reference node when their masks overlap (one to one, most overlap first);
recall = matched / reference nodes, precision = matched / model nodes; station and short-axis class over matched
nodes; Bland–Altman: model − reference short axis, limits = mean ± 1.96 SD.</li>
<li>Cohen's kappa: agreement of two raters' case calls beyond chance; n/a when both always gave the same answer.</li>
<li>Study figures are the published authors' on their data, shown for orientation only.</li></ul>"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _mri_plots(out: Path, m: dict[str, Any]) -> list[Path]:
    found = [plots.confusion_plot(out / "station_confusion.png", m["station"]["matrix"], m["station"]["labels"],
                                  "Station of matched nodes"),
             plots.confusion_plot(out / "short_axis_confusion.png", m["short_axis_class"]["matrix"],
                                  m["short_axis_class"]["labels"], "Short-axis class of matched nodes"),
             plots.dice_plot(out / "dice.png", m["dice"]["values"], None, "Node mask Dice per case")]
    ba = m["bland_altman_short_axis_mm"]
    if ba["pred"]:
        found.append(plots.bland_altman_plot(out / "bland_altman.png", ba["pred"], ba["truth"], ba))
    s = m["status"]
    found.append(plots.confusion_plot(out / "status_confusion.png", [[s["tp"], s["fn"]], [s["fp"], s["tn"]]],
                                      ["positive", "negative"], "Patient LLN status"))
    return found


def _wsi_plots(out: Path, m: dict[str, Any], sweep: Sequence[dict[str, Any]]) -> list[Path]:
    p, s = m["patch"], m["slide"]
    found = [plots.roc_plot(out / "roc.png", p["roc"]["fpr"], p["roc"]["tpr"], p["auc"]["value"], "Patch ROC"),
             plots.confusion_plot(out / "deposit_class_confusion.png", m["deposit_class"]["matrix"],
                                  m["deposit_class"]["labels"], "Deposit class"),
             plots.confusion_plot(out / "slide_confusion.png", [[s["tp"], s["fn"]], [s["fp"], s["tn"]]],
                                  ["metastasis", "none"], "Slide: metastasis present"),
             plots.dice_plot(out / "dice.png", m["dice_positive_slides"]["values"], m["published"]["dice.mean"],
                             "Dice on positive slides")]
    if sweep:
        found.append(plots.sweep_plot(out / "gate_sweep.png", sweep))
    return found


def write_report(out: Path, result: dict[str, Any], records: Sequence[dict[str, Any]]) -> Path:
    """Write the PNG plots and ``report.html`` into ``out``; return the report's path."""
    m, task = result["metrics"], result["task"]
    figures = out / "plots"
    figures.mkdir(exist_ok=True)
    if task == "mri-lln":
        pngs = _mri_plots(figures, m)
    elif task == "wsi-two-stage":
        pngs = _wsi_plots(figures, m, result.get("gate_sweep", []))
    else:
        pngs = []
    slides = sorted((out / "plots" / "cases").glob("*.png")) if (out / "plots" / "cases").is_dir() else []
    model = result["model"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dicomnode evaluate: {html.escape(model['id'])}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>Validation of {html.escape(model['id'])} {html.escape(model['version'])} ({html.escape(task)})</h1>",
             f"<p>{result['n_evaluated']} of {result['n_cases']} cases evaluated from "
             f"<code>{html.escape(result['cases_folder'])}</code>; pipeline time {result['timing_s']['total']:.1f} s "
             f"in all.</p>"]
    if model.get("not_for_clinical_use"):
        parts.append("<p class='warn'>This model bundle is marked NOT FOR CLINICAL USE.</p>")
    parts += [f"<p class='err'>{html.escape(n)}</p>" for n in result["notes"]]
    parts += ["<h2>Headline figures</h2>", headline_rows(task, m)]
    for key, title in (("station", "Station (matched nodes)"), ("short_axis_class", "Short-axis class"),
                       ("deposit_class", "Deposit class (slides)")):
        if key in m:
            parts.append(matrix_table(title, m[key]["labels"], m[key]["matrix"]))
    if result.get("gate_sweep"):
        rows = "".join(f"<tr><td>{r['gate']:g}</td><td>{_f(r['sen'])}</td><td>{_f(r['spe'])}</td>"
                       f"<td>{_f(r['dice_mean'])}</td><td>{r['seconds']:.1f}</td></tr>" for r in result["gate_sweep"])
        parts.append("<h2>Gate threshold sweep</h2><table><tr><th>gate</th><th>slide SEN</th><th>slide SPE</th>"
                     f"<th>Dice</th><th>seconds</th></tr>{rows}</table>")
    if "compare" in result:
        parts.append(compare_table(result["compare"]))
    parts += ["<h2>Plots</h2>", *[_img(p, p.stem) for p in pngs]]
    if slides:
        parts += ["<h2>Slides: heatmap and annotation outline</h2>", *[_img(p, p.stem) for p in slides]]
    parts += ["<h2>Cases</h2>", cases_table(records), _DEFINITIONS, "</body></html>"]
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

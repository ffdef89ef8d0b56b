"""HTML tables of the report: headline figures beside the studies', matrices, cases, comparison."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["cases_table", "compare_table", "headline_rows", "matrix_table"]


def _f(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "positive" if value else "negative"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _ci(block: dict[str, Any]) -> str:
    if block.get("ci_low") is None:
        return _f(block.get("value"))
    return f"{_f(block['value'])} <small>({_f(block['ci_low'])}–{_f(block['ci_high'])})</small>"


def _row(name: str, site: str, n: Any, study: Any, study_name: str) -> str:
    shown = "" if study is None else f"{_f(study)} <span class='study'>({html.escape(study_name)})</span>"
    return f"<tr><td>{html.escape(name)}</td><td>{site}</td><td>{_f(n)}</td><td>{shown}</td></tr>"


def _mri_rows(m: dict[str, Any]) -> list[str]:
    s, pub, d = m["status"], m["published"], m["detection"]
    study = "the study's, " + pub["study"]
    rows = [_row(f"Patient LLN status {k.upper()}", _ci(s[k]), s["n"], pub.get(f"status.{k}"), study)
            for k in ("acc", "sen", "spe")]
    rows += [_row(f"Node detection {k}", _ci(d[k]["pooled"]), d["n_truth_nodes" if k == "recall" else "n_pred_nodes"],
                  None, "") for k in ("recall", "precision")]
    rows.append(_row("Station ACC (matched nodes)", _f(m["station"]["acc"]), sum(map(sum, m["station"]["matrix"])),
                     pub["station.acc"], study))
    rows.append(_row("Short-axis class ACC", _f(m["short_axis_class"]["acc"]),
                     sum(map(sum, m["short_axis_class"]["matrix"])), pub["short_axis_class.acc"], study))
    dice = m["dice"]
    rows.append(_row("Node Dice, mean ± SD", f"{_f(dice['mean'])} ± {_f(dice['sd'])} <small>(mean CI "
                     f"{_f(dice['mean_ci']['ci_low'])}–{_f(dice['mean_ci']['ci_high'])})</small>", dice["n"], None, ""))
    for pair, k in m["kappa"].items():
        study_k = pub["kappa.model_vs_R1"] if pair == "model_vs_R1" else None
        rows.append(_row(f"Cohen's kappa {pair.replace('_vs_', ' vs ')}", _f(k["value"]), k["n"], study_k,
                         "the study's, vs senior radiologist"))
    ba = m["bland_altman_short_axis_mm"]
    rows.append(_row("Short axis model − reference (mm), mean [LoA]",
                     f"{_f(ba['mean_diff'])} [{_f(ba['loa_lower'])}, {_f(ba['loa_upper'])}]", ba["n"], None, ""))
    return rows


def _wsi_rows(m: dict[str, Any]) -> list[str]:
    s, p, pub, d = m["slide"], m["patch"], m["published"], m["dice_positive_slides"]
    study = "the study's, " + pub["study"].split(";")[0]
    resnet = "the study's, ResNet50 SLN study"
    rows = [_row("Slide recall (SEN), metastasis present", _ci(s["sen"]), s["n"], pub["slide.sen"], study),
            _row("Slide specificity", _ci(s["spe"]), s["n"], pub["slide.spe"], study),
            _row("Dice on positive slides, mean ± SD", f"{_f(d['mean'])} ± {_f(d['sd'])} <small>(mean CI "
                 f"{_f(d['mean_ci']['ci_low'])}–{_f(d['mean_ci']['ci_high'])})</small>", d["n"],
                 f"{pub['dice.mean']} ± {pub['dice.sd']}", study),
            _row("Deposit class ACC", _f(m["deposit_class"]["acc"]), sum(map(sum, m["deposit_class"]["matrix"])),
                 None, "")]
    for key, name in (("acc", "ACC"), ("sen", "SEN"), ("spe", "SPE"), ("f1", "weighted F1"), ("auc", "ROC AUC")):
        rows.append(_row(f"Patch {name} (pooled)", _ci(p[key]), p["n"], pub.get(f"patch.{key}"), resnet))
    return rows


def headline_rows(task: str, m: dict[str, Any]) -> str:
    """The headline table: figure, the site's value (95 % CI), n, the published figure."""
    if task == "mri-lln":
        rows = _mri_rows(m)
    elif task == "wsi-two-stage":
        rows = _wsi_rows(m)
    else:
        s = m["status"]
        rows = [_row(f"Case status {k.upper()}", _ci(s[k]), s["n"], None, "") for k in ("acc", "sen", "spe")]
    head = "<tr><th>figure</th><th>this site (95 % CI)</th><th>n</th><th>published</th></tr>"
    return f"<table class='headline'>{head}{''.join(rows)}</table>"


def matrix_table(title: str, labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """A confusion matrix: rows reference, columns model."""
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body = "".join(f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                   for label, row in zip(labels, matrix, strict=True))
    return (f"<h3>{html.escape(title)}</h3><table><tr><th>reference ↓ / model →</th>{head}</tr>{body}</table>")


def cases_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per case: reference, model, Dice, nodes/classes, seconds, error."""
    keys = ["truth", "predicted", "dice", "n_truth_nodes", "n_pred_nodes", "n_matched", "truth_class",
            "pred_class", "seconds"]
    shown = [k for k in keys if any(k in r for r in records)]
    head = "".join(f"<th>{k}</th>" for k in ["case", *shown, "error"])
    rows = "".join(
        f"<tr><td>{html.escape(r['case'])}</td>" + "".join(f"<td>{_f(r.get(k))}</td>" for k in shown)
        + f"<td class='err'>{html.escape(r['error'])}</td></tr>" for r in records)
    return f"<table class='cases'><tr>{head}</tr>{rows}</table>"


def compare_table(c: dict[str, Any]) -> str:
    """The paired comparison of model A and B."""
    a, b = c["a"], c["b"]
    mc, dice, sen = c["status_mcnemar"], c["dice_mean"], c["sensitivity"]

    def diff(block: dict[str, Any]) -> str:
        return f"{_f(block['a'])} → {_f(block['b'])}: Δ {_ci(block['diff'])}, p = {_f(block['p_value'])}"

    return (f"<h2>Comparison A = {html.escape(a['id'])} {html.escape(a['version'])} → B = {html.escape(b['id'])} "
            f"{html.escape(b['version'])}</h2><table><tr><th>figure</th><th>A → B (paired, 95 % CI)</th><th>n</th></tr>"
            f"<tr><td>Case status (McNemar, exact)</td><td>only A right {mc['only_a_correct']}, only B right "
            f"{mc['only_b_correct']}, p = {_f(mc['p_value'])}</td><td>{mc['n']}</td></tr>"
            f"<tr><td>Mean Dice (paired bootstrap)</td><td>{diff(dice)}</td><td>{dice['n']}</td></tr>"
            f"<tr><td>Sensitivity (paired bootstrap)</td><td>{diff(sen)}</td><td>{sen['n']}</td></tr></table>")

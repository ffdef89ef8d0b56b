"""``evaluate(CASES, OUT, options)``: run, compare with ground truth, aggregate, report.

A case whose pipeline run or ground truth fails keeps its error in ``cases.csv`` and the
report and is left out of the aggregates; the other cases are still evaluated. Only what
stops the whole command (no cases folder, a bundle that cannot be loaded or built) raises.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomnode.errors import DicomNodeError
from dicomnode.evaluate import mri, wsi
from dicomnode.evaluate.cases import Case, discover
from dicomnode.evaluate.compare import compare_records
from dicomnode.evaluate.run import CaseRun, load_model, run_cases
from dicomnode.evaluate.summary import binary_block, case_dice, dice_block
from dicomnode.inference.manifest import ModelBundle

__all__ = ["Options", "evaluate"]


@dataclass(frozen=True)
class Options:
    """What ``dicomnode evaluate`` was asked to do.

    Attributes
    ----------
    model
        Bundle folder; with ``compare`` the first of the two (A).
    compare
        Bundle B, run on the same cases (paired comparison A → B).
    thresholds
        Overrides of the bundle's ``thresholds`` (both bundles).
    gate_sweep
        WSI gate probabilities to rerun the slides with (slide recall/specificity, Dice).
    settings
        Pipeline settings, as a route's (``device``, ``providers`` ...).
    """

    model: Path
    compare: Path | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    gate_sweep: tuple[float, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    wsi: wsi.WsiOptions = field(default_factory=wsi.WsiOptions)
    progress: bool = True


def _record(run: CaseRun, bundle: ModelBundle, options: Options, overlays: Path | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"case": run.case.name, "seconds": round(run.seconds, 3), "error": run.error,
                           "readers": run.case.readers}
    if run.result is None:
        return rec
    try:
        if bundle.task == "mri-lln":
            rec.update(mri.evaluate_case(run, bundle))
        elif bundle.task == "wsi-two-stage":
            overlay = None
            if overlays is not None:
                overlays.mkdir(parents=True, exist_ok=True)
                overlay = overlays / f"{run.case.name}.png"
            rec.update(wsi.evaluate_case(run, bundle, options.wsi, overlay))
        else:
            rec.update(predicted=None, truth=run.case.status)
    except DicomNodeError as exc:
        rec["error"] = f"ground truth: {exc}"
    if "overlap" in rec:
        rec["dice"] = case_dice(rec)
    return rec


def _aggregate(records: list[dict[str, Any]], bundle: ModelBundle, options: Options) -> dict[str, Any]:
    ok = [r for r in records if not r["error"]]
    if bundle.task == "mri-lln":
        return mri.aggregate(ok, bundle)
    if bundle.task == "wsi-two-stage":
        return wsi.aggregate(ok, bundle, options.wsi)
    return {"status": binary_block(ok)}


def _one_model(path: Path, cases: Sequence[Case], out: Path, options: Options, label: str,
               overrides: dict[str, float], overlays: Path | None = None,
               ) -> tuple[ModelBundle, list[dict[str, Any]], dict[str, Any]]:
    bundle = load_model(path, overrides)
    runs = run_cases(bundle, cases, out, settings=options.settings, label=label, progress=options.progress)
    records = [_record(r, bundle, options, overlays) for r in runs]
    return bundle, records, _aggregate(records, bundle, options)


def _sweep(cases: Sequence[Case], out: Path, options: Options) -> list[dict[str, Any]]:
    rows = []
    for gate in options.gate_sweep:
        start = time.perf_counter()
        _, records, _ = _one_model(options.model, cases, out / "sweep" / f"gate_{gate:g}", options,
                                   f"gate {gate:g}", {**options.thresholds, "gate_probability": gate})
        ok = [r for r in records if not r["error"]]
        slide = binary_block(ok)
        dice = dice_block([r for r in ok if r.get("truth") and "overlap" in r])
        rows.append({"gate": gate, "sen": slide["sen"]["value"], "spe": slide["spe"]["value"],
                     "dice_mean": dice["mean"], "seconds": round(time.perf_counter() - start, 2)})
    return rows


def _model_json(bundle: ModelBundle) -> dict[str, Any]:
    return {"id": bundle.id, "version": bundle.version, "task": bundle.task, "path": str(bundle.root),
            "thresholds": dict(bundle.thresholds), "not_for_clinical_use": bundle.not_for_clinical_use}


def _write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    skip = {"pairs", "patch_truth", "patch_prob", "readers"}
    columns: list[str] = []
    for rec in records:
        columns += [k for k in rec if k not in skip and k not in columns]
    readers = sorted({r for rec in records for r in rec.get("readers", {})})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns, *readers])
        for rec in records:
            writer.writerow([_cell(rec.get(c)) for c in columns] + [_cell(rec["readers"].get(r)) for r in readers])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "positive" if value else "negative"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def evaluate(root: Path, out: Path, options: Options) -> dict[str, Any]:
    """Evaluate the cases under ``root``; write ``metrics.json``, ``cases.csv``, plots and ``report.html``.

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    DicomNodeError
        The cases folder is missing, or a bundle cannot be loaded or its pipeline built.
    """
    from dicomnode.evaluate.report import write_report  # matplotlib only when a report is written

    cases, notes = discover(root)
    out.mkdir(parents=True, exist_ok=True)
    bundle, records, metrics = _one_model(options.model, cases, out, options, "evaluate", options.thresholds,
                                          out / "plots" / "cases")
    result: dict[str, Any] = {"model": _model_json(bundle), "task": bundle.task, "cases_folder": str(root),
                              "n_cases": len(cases), "n_evaluated": sum(not r["error"] for r in records),
                              "notes": notes, "metrics": metrics,
                              "timing_s": {"total": round(sum(r["seconds"] for r in records), 3),
                                           "per_case": {r["case"]: r["seconds"] for r in records}}}
    if options.compare is not None:
        other, records_b, metrics_b = _one_model(options.compare, cases, out / "compare_b", options, "model B",
                                                 options.thresholds)
        result["compare"] = {"a": _model_json(bundle), "b": _model_json(other), "metrics_b": metrics_b,
                             **compare_records(records, records_b)}
        _write_csv(out / "cases_b.csv", records_b)
    if options.gate_sweep and bundle.task == "wsi-two-stage":
        result["gate_sweep"] = _sweep(cases, out, options)
    _write_csv(out / "cases.csv", records)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    write_report(out, result, records)
    return result

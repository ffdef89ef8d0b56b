"""MRI (``mri-lln``) evaluation, as in the nnU-Net study.

Per case the ground-truth label map is measured with the pipeline's own
:func:`~dicomnode.pipelines.mri_lln.findings.compute_findings` (nodes as connected
components, station, short axis, final status), so reference and model nodes are measured
the same way. Model nodes are the node segments of the case's SEG output with the
findings of the same tracking id. A model node matches a reference node when they overlap;
pairs are taken greedily by most shared voxels, one to one.

Aggregates (:func:`aggregate`): patient LLN status ACC/SEN/SPE; node detection recall and
precision; station and short-axis-class (< / ≥ threshold) confusion of matched nodes;
Dice of the node masks; Cohen's kappa model ↔ each reader and between readers;
Bland–Altman of matched short axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dicomnode.dicom.volume import load_volume, read_instances
from dicomnode.evaluate.cases import CaseError
from dicomnode.evaluate.metrics import bland_altman, cohen_kappa, confusion_matrix
from dicomnode.evaluate.run import CaseRun
from dicomnode.evaluate.summary import binary_block, dice_block, ratio_block
from dicomnode.evaluate.truth_mr import node_segments, read_mr_truth
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.mri_lln.findings import compute_findings
from dicomnode.pipelines.mri_lln.labels import LabelScheme

__all__ = ["PUBLISHED", "aggregate", "evaluate_case"]

#: Qiao et al. 2025 (nnU-Net, external validation), ../shared/SEEDS.md §3.
PUBLISHED = {
    "study": "Qiao et al., Front Oncol 2025 (nnU-Net, 480 external patients)",
    "status.acc": 0.875, "status.sen": 0.895, "status.spe": 0.738,
    "station.acc": 0.773, "short_axis_class.acc": 0.75, "kappa.model_vs_R1": 0.64,
}


def _match(truth_map: np.ndarray, n_truth: int, pred: dict[str, np.ndarray]) -> list[tuple[int, str, int]]:
    """Greedy one-to-one (truth number, model tracking id, shared voxels) by overlap."""
    overlaps = []
    for tracking_id, mask in pred.items():
        values, counts = np.unique(truth_map[mask], return_counts=True)
        overlaps += [(int(c), int(v), tracking_id) for v, c in zip(values, counts, strict=True) if v]
    used_t: set[int] = set()
    used_p: set[str] = set()
    pairs = []
    for shared, number, tracking_id in sorted(overlaps, key=lambda o: (-o[0], o[1], o[2])):
        if number not in used_t and tracking_id not in used_p and number <= n_truth:
            used_t.add(number)
            used_p.add(tracking_id)
            pairs.append((number, tracking_id, shared))
    return pairs


def _size_class(mm: float, threshold: float) -> str:
    return f">={threshold:g}mm" if mm >= threshold else f"<{threshold:g}mm"


def evaluate_case(run: CaseRun, bundle: ModelBundle) -> dict[str, Any]:
    """The per-case record (``cases.csv`` row + what the aggregates need).

    Raises
    ------
    CaseError
        The ground truth cannot be read or is not on the series grid.
    """
    assert run.result is not None
    scheme = LabelScheme.from_manifest(bundle.labels, bundle.thresholds)
    found = run.result.findings
    rec: dict[str, Any] = {"predicted": found.get("lln_status") == "positive", "truth": run.case.status,
                           "n_pred_nodes": int(found.get("n_nodes", 0)), "pairs": []}
    if run.case.truth is None:
        return rec
    datasets = read_instances(run.case.images)
    volume = load_volume(datasets)
    labels = read_mr_truth(run.case.truth, volume, scheme, str(datasets[0].get("FrameOfReferenceUID", "")))
    truth = compute_findings(labels, volume, scheme)
    seg = next((p for n, p in run.files.items() if n.startswith("seg_")), None)
    pred = node_segments(seg, volume) if seg is not None else {}
    if len(pred) != rec["n_pred_nodes"]:
        raise CaseError(f"the SEG output has {len(pred)} node segments, findings.json {rec['n_pred_nodes']} nodes")
    if rec["truth"] is None:
        rec["truth"] = truth.lln_positive
    by_id = {n["tracking_id"]: n for n in found.get("nodes", [])}
    t_nodes = {n.number: n for n in truth.nodes}
    threshold = scheme.short_axis_positive_mm
    for number, tracking_id, _ in _match(truth.node_map, len(truth.nodes), pred):
        t, p = t_nodes[number], by_id[tracking_id]
        rec["pairs"].append({
            "truth_station": t.station or "none", "pred_station": p.get("station") or "none",
            "truth_short_mm": round(t.short_axis.length_mm, 2), "pred_short_mm": float(p["short_axis_mm"]),
            "truth_class": _size_class(t.short_axis.length_mm, threshold),
            "pred_class": _size_class(float(p["short_axis_mm"]), threshold),
        })
    truth_mask = truth.node_map > 0
    pred_mask = np.zeros(volume.shape, bool)
    for mask in pred.values():
        pred_mask |= mask
    rec.update(n_truth_nodes=len(truth.nodes), n_matched=len(rec["pairs"]),
               overlap=int((truth_mask & pred_mask).sum()), truth_voxels=int(truth_mask.sum()),
               pred_voxels=int(pred_mask.sum()))
    return rec


def _kappas(records: list[dict[str, Any]]) -> dict[str, Any]:
    readers = sorted({r for rec in records for r in rec.get("readers", {})})
    out: dict[str, Any] = {}
    raters = ["model", *readers]
    for i, a in enumerate(raters):
        for b in raters[i + 1:]:
            both = [rec for rec in records if _call(rec, a) is not None and _call(rec, b) is not None]
            out[f"{a}_vs_{b}"] = {"n": len(both), "value": cohen_kappa(
                [_call(rec, a) for rec in both], [_call(rec, b) for rec in both], [True, False])}
    return out


def _call(rec: dict[str, Any], rater: str) -> bool | None:
    return bool(rec["predicted"]) if rater == "model" else rec.get("readers", {}).get(rater)


def aggregate(records: list[dict[str, Any]], bundle: ModelBundle) -> dict[str, Any]:
    """The MRI metrics over the evaluated cases (see the module docstring)."""
    scheme = LabelScheme.from_manifest(bundle.labels, bundle.thresholds)
    with_truth = [r for r in records if "n_truth_nodes" in r]
    pairs = [p for r in with_truth for p in r["pairs"]]
    stations = [*sorted(set(scheme.regions.values())), "none"]
    threshold = scheme.short_axis_positive_mm
    classes = [f"<{threshold:g}mm", f">={threshold:g}mm"]
    station_m = confusion_matrix([p["truth_station"] for p in pairs], [p["pred_station"] for p in pairs], stations)
    class_m = confusion_matrix([p["truth_class"] for p in pairs], [p["pred_class"] for p in pairs], classes)
    ba = bland_altman([p["pred_short_mm"] for p in pairs], [p["truth_short_mm"] for p in pairs])
    return {
        "status": binary_block(records),
        "detection": {
            "recall": ratio_block(with_truth, "n_matched", "n_truth_nodes"),
            "precision": ratio_block(with_truth, "n_matched", "n_pred_nodes"),
            "n_truth_nodes": sum(r["n_truth_nodes"] for r in with_truth),
            "n_pred_nodes": sum(r["n_pred_nodes"] for r in with_truth),
        },
        "station": {"labels": stations, "matrix": station_m.tolist(),
                    "acc": float(np.trace(station_m) / station_m.sum()) if station_m.sum() else None},
        "short_axis_class": {"labels": classes, "matrix": class_m.tolist(),
                             "acc": float(np.trace(class_m) / class_m.sum()) if class_m.sum() else None},
        "dice": dice_block(with_truth),
        "kappa": _kappas(records),
        "bland_altman_short_axis_mm": {**ba.to_json(),
                                       "pred": [p["pred_short_mm"] for p in pairs],
                                       "truth": [p["truth_short_mm"] for p in pairs]},
        "published": PUBLISHED,
    }

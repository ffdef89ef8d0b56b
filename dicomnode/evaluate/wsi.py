"""WSI (``wsi-two-stage``) evaluation, as in the ResNet50 and the two-stage studies.

Patch level (ResNet50 study): every classifier patch the pipeline classified (tissue) is
compared with the annotation at patch resolution: a patch is tumour when more than
``patch_fraction`` (20 %) of it is annotated tumour; the model calls it tumour at
``patch_threshold`` (0.5). ACC, SEN, SPE, weighted F1 and the ROC/AUC of the patch
probabilities, pooled over slides and per slide.

Slide level (two-stage study): "metastasis present" (the findings' ``metastasis``) against
the reference (``labels.csv`` status, else whether the annotation has tumour); Dice of the
segmentation (tumour probability ≥ the bundle's ``tumour_probability``, on the segmenter's
output grid) on reference-positive slides; deposit class (ITC / micro / macro, by the
largest deposit) against the class of the annotation's largest deposit, measured with the
pipeline's own :func:`~dicomnode.pipelines.wsi_two_stage.deposits.find_deposits`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.evaluate.cases import CaseError
from dicomnode.evaluate.metrics import binary_rates, bootstrap_ci, confusion_matrix, roc_auc, roc_curve, weighted_f1
from dicomnode.evaluate.plots import slide_overlay
from dicomnode.evaluate.run import CaseRun
from dicomnode.evaluate.summary import binary_block, dice_block, mean_sd
from dicomnode.evaluate.truth_wsi_seg import read_slide_truth
from dicomnode.inference.manifest import ModelBundle
from dicomnode.pipelines.wsi_two_stage.config import thresholds
from dicomnode.pipelines.wsi_two_stage.deposits import find_deposits, slide_class

__all__ = ["CLASSES", "PUBLISHED", "WsiOptions", "aggregate", "evaluate_case", "patch_truth", "write_patches"]

CLASSES = ["none", "itc", "micro", "macro"]
#: ../shared/SEEDS.md §1 (two-stage) and §2 (ResNet50, whole-slide testing).
PUBLISHED = {
    "study": "Fayzullin et al. 2026 (two-stage, 554 WSIs); ResNet50 SLN study (whole slides)",
    "slide.sen": 1.0, "slide.spe": 0.935, "dice.mean": 0.818, "dice.sd": 0.105,
    "patch.acc": 0.982, "patch.f1": 0.978, "patch.spe": 0.995, "patch.sen": 0.256,
}
_SUB = 8  # annotation pixels per patch side when measuring a patch's tumour fraction (polygons)


@dataclass(frozen=True)
class WsiOptions:
    """Patch-level rules: tumour fraction above which a patch is tumour, probability cut."""

    patch_fraction: float = 0.2
    patch_threshold: float = 0.5


def patch_truth(mask_fine: np.ndarray, grid_shape: tuple[int, int], sub: int = _SUB) -> np.ndarray:
    """Tumour fraction of each patch from a mask with ``sub`` × ``sub`` pixels per patch."""
    rows, cols = grid_shape
    padded = np.zeros((rows * sub, cols * sub), dtype=float)
    r, c = min(rows * sub, mask_fine.shape[0]), min(cols * sub, mask_fine.shape[1])
    padded[:r, :c] = mask_fine[:r, :c]
    fraction: np.ndarray = padded.reshape(rows, sub, cols, sub).mean(axis=(1, 3))
    return fraction


def write_patches(path: Path, classified: np.ndarray, prob: np.ndarray, cell_um: float,
                  fraction: np.ndarray) -> None:
    """The classified patches of a slide, one CSV row each, in the order of the patch-level records.

    Columns: ``row, col`` on the classifier grid; ``x_um, y_um, size_um``: the level-0 square
    it covers (from the top-left corner of the total pixel matrix); ``probability`` (the
    classifier's, as used for the ROC); ``tumour_fraction`` of the annotation in it.
    """
    rows, cols = np.nonzero(classified)
    lines = ["row,col,x_um,y_um,size_um,probability,tumour_fraction"]
    lines += [f"{r},{c},{c * cell_um:g},{r * cell_um:g},{cell_um:g},{float(prob[r, c]):.5f},{fraction[r, c]:.5f}"
              for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    path.write_text("\n".join(lines) + "\n")


def _sub(cell_um: float, mask_mpp: float) -> int:
    """Annotation pixels per patch side: a mask's own pixels when a whole number of them make a patch
    (the patch's tumour fraction is then its exact area fraction), else ``_SUB``."""
    ratio = cell_um / mask_mpp if mask_mpp > 0 else 0.0
    return round(ratio) if ratio >= 1 and abs(ratio - round(ratio)) < 1e-6 else _SUB


def _fit(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    r, c = min(shape[0], mask.shape[0]), min(shape[1], mask.shape[1])
    out[:r, :c] = mask[:r, :c]
    return out


def evaluate_case(
    run: CaseRun, bundle: ModelBundle, options: WsiOptions, overlay: Path | None = None
) -> dict[str, Any]:
    """The per-case record of one slide; with ``overlay``, also its heatmap + annotation PNG there.

    Raises
    ------
    CaseError
        The annotation cannot be read or does not fit the slide.
    """
    assert run.result is not None
    found, t = run.result.findings, thresholds(bundle)
    rec: dict[str, Any] = {"predicted": bool(found.get("metastasis")), "truth": run.case.status,
                           "pred_class": found.get("class"), "truth_class": None}
    a = run.analysis
    if run.case.truth is None:
        if overlay is not None and a is not None:
            slide_overlay(overlay, a, None, 1.0, t.heatmap_bands, run.case.name)
        return rec
    if a is None:
        raise CaseError("this pipeline does not expose its analysis; only case labels can be evaluated")
    truth = read_slide_truth(run.case.truth, run.case.mask_mpp, a.base, a.base_mpp)
    size = (int(a.base.TotalPixelMatrixColumns), int(a.base.TotalPixelMatrixRows))
    grid = a.classifier.grid
    sub = _sub(grid.cell_um, truth.mask_mpp if truth.mask is not None else 0.0)
    fine = truth.raster(grid.cell_um / sub, a.base_mpp, size)
    fraction = patch_truth(fine, a.classifier.prob.shape, sub)
    classified = np.asarray(a.classifier.classified, dtype=bool)
    rec["patch_truth"] = (fraction[classified] > options.patch_fraction).tolist()
    rec["patch_prob"] = np.asarray(a.classifier.prob)[classified].astype(float).round(5).tolist()
    if run.folder is not None:
        write_patches(run.folder / "patches.csv", classified, np.asarray(a.classifier.prob), grid.cell_um, fraction)
    seg_mpp = float(a.segmenter.mpp)
    gt = _fit(truth.raster(seg_mpp, a.base_mpp, size), a.segmenter.prob.shape)
    pred = np.asarray(a.segmenter.prob) >= t.tumour_probability
    if rec["truth"] is None:
        rec["truth"] = bool(gt.any())
    deposits = find_deposits(gt.astype(np.float32), seg_mpp, 0.5)
    largest = deposits[0].largest_dimension_mm if deposits else 0.0
    rec["truth_class"] = slide_class(largest, t.itc_max_mm, t.micro_max_mm)
    rec.update(overlap=int((gt & pred).sum()), truth_voxels=int(gt.sum()), pred_voxels=int(pred.sum()))
    if overlay is not None:
        slide_overlay(overlay, a, gt, seg_mpp, t.heatmap_bands, f"{run.case.name}: reference outline in black")
    return rec


def _patch_stats(records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    truth = [v for r in records for v in r["patch_truth"]]
    prob = [v for r in records for v in r["patch_prob"]]
    rates = binary_rates(truth, [p >= threshold for p in prob])
    return {**rates, "f1": weighted_f1(truth, [p >= threshold for p in prob]), "auc": roc_auc(truth, prob)}


def _patch_block(records: list[dict[str, Any]], options: WsiOptions) -> dict[str, Any]:
    with_patches = [r for r in records if "patch_truth" in r]
    pooled = _patch_stats(with_patches, options.patch_threshold)
    out: dict[str, Any] = {k: pooled[k] for k in ("tp", "fp", "tn", "fn", "n")}
    for key in ("acc", "sen", "spe", "f1", "auc"):
        def stat(rs: Sequence[dict[str, Any]], k: str = key) -> Any:
            return _patch_stats(list(rs), options.patch_threshold)[k]

        ci = bootstrap_ci(with_patches, stat)
        per_slide = [_patch_stats([r], options.patch_threshold)[key] for r in with_patches]
        out[key] = {**ci.to_json(), "per_slide": mean_sd(per_slide)}
    truth = [v for r in with_patches for v in r["patch_truth"]]
    fpr, tpr, _ = roc_curve(truth, [v for r in with_patches for v in r["patch_prob"]])
    out["roc"] = {"fpr": [None if math.isnan(v) else v for v in fpr.tolist()],
                  "tpr": [None if math.isnan(v) else v for v in tpr.tolist()]}
    out["rule"] = {"tumour_fraction_above": options.patch_fraction, "probability_at_least": options.patch_threshold}
    return out


def aggregate(records: list[dict[str, Any]], bundle: ModelBundle, options: WsiOptions) -> dict[str, Any]:
    """The WSI metrics over the evaluated slides (see the module docstring)."""
    with_truth = [r for r in records if "overlap" in r]
    positive = [r for r in with_truth if r["truth"]]
    classed = [r for r in records if r.get("truth_class") is not None]
    matrix = confusion_matrix([r["truth_class"] for r in classed], [r["pred_class"] for r in classed], CLASSES)
    return {
        "slide": binary_block(records),
        "dice_positive_slides": dice_block(positive),
        "deposit_class": {"labels": CLASSES, "matrix": matrix.tolist(),
                          "acc": float(np.trace(matrix) / matrix.sum()) if matrix.sum() else None},
        "patch": _patch_block(records, options),
        "thresholds": dict(bundle.thresholds),
        "published": PUBLISHED,
    }

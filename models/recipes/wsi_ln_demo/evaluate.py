"""Held-out evaluation of the exported ONNX models through dicomnode's ONNX adapter.

Mirrors the ``wsi-two-stage`` pipeline on synthetic slides: classifier on a
non-overlapping patch grid, segmenter only on tiles that touch a gated patch (plus a
one-patch halo), then deposits as connected components. Ground truth comes from the
generator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from data import SlideArrays
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from dicomnode.inference.onnx import OnnxModel


def _pad(img: np.ndarray, size: int) -> np.ndarray:
    rows, cols = -(-img.shape[0] // size) * size, -(-img.shape[1] // size) * size
    out = np.full((rows, cols, 3), 255, np.uint8)  # white glass past the edge
    out[: img.shape[0], : img.shape[1]] = img
    return out


def grid_patches(img: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Non-overlapping ``size``² patches of ``img`` (padded white) and the grid shape."""
    padded = _pad(img, size)
    gr, gc = padded.shape[0] // size, padded.shape[1] // size
    patches = padded.reshape(gr, size, gc, size, 3).swapaxes(1, 2).reshape(-1, size, size, 3)
    return patches, (gr, gc)


def predict_batched(model: OnnxModel, patches: np.ndarray, batch: int = 32) -> np.ndarray:
    """Run ``model`` over ``patches`` in batches."""
    return np.concatenate([model.predict(patches[i : i + batch]) for i in range(0, len(patches), batch)])


def classifier_grid(model: OnnxModel, arr: SlideArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probability grid, label grid (> 20 % tumour) and tissue grid (> 10 % tissue)."""
    size = model.patch_size
    patches, shape = grid_patches(arr.image, size)
    prob = predict_batched(model, patches).reshape(shape)
    rows, cols = shape[0] * size, shape[1] * size

    def frac(m: np.ndarray) -> np.ndarray:
        full = np.zeros((rows, cols), bool)
        full[: m.shape[0], : m.shape[1]] = m
        return full.reshape(shape[0], size, shape[1], size).mean((1, 3))

    return prob, frac(arr.mask) > 0.2, frac(arr.tissue) > 0.1


def segment(model: OnnxModel, arr: SlideArrays, run: np.ndarray | None = None) -> np.ndarray:
    """Segmenter probability on ``arr``'s grid; tiles where ``run`` is False stay 0."""
    size = model.patch_size
    patches, (gr, gc) = grid_patches(arr.image, size)
    keep = np.ones(gr * gc, bool) if run is None else run.reshape(-1)
    prob = np.zeros((gr * gc, size, size), np.float32)
    if keep.any():
        prob[keep] = predict_batched(model, patches[keep], 8)
    full = prob.reshape(gr, gc, size, size).swapaxes(1, 2).reshape(gr * size, gc * size)
    return full[: arr.image.shape[0], : arr.image.shape[1]]


def gate_tiles(gate: np.ndarray, cell_um: float, tile_um: float, grid: tuple[int, int]) -> np.ndarray:
    """Segmenter tiles (grid shape ``grid``) that overlap a gated classifier cell + halo."""
    halo = ndimage.binary_dilation(gate, structure=np.ones((3, 3), bool))
    run = np.zeros(grid, bool)
    for i in range(grid[0]):
        r0, r1 = int(i * tile_um // cell_um), int(-(-(i + 1) * tile_um // cell_um))
        for j in range(grid[1]):
            c0, c1 = int(j * tile_um // cell_um), int(-(-(j + 1) * tile_um // cell_um))
            run[i, j] = bool(halo[r0:r1, c0:c1].any())
    return run


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient (1.0 when both are empty)."""
    denom = int(pred.sum()) + int(truth.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & truth).sum()) / denom


def _deposits(arr: SlideArrays, pred: np.ndarray) -> tuple[list[dict[str, Any]], int, int]:
    """Per-deposit detection (any predicted pixel in it) and false-positive components."""
    from dataclasses import replace

    found = []
    for dep in arr.slide.deposits:
        disc = replace(arr.slide, deposits=[dep]).mask(arr.mpp)[: pred.shape[0], : pred.shape[1]]
        found.append(
            {
                "category": dep.category,
                "diameter_mm": dep.largest_dimension_mm,
                "detected": bool((pred & disc).any()),
            }
        )
    labels, n = ndimage.label(pred)
    hit = set(np.unique(labels[pred & arr.mask]).tolist())
    sizes = ndimage.sum_labels(pred, labels, np.arange(1, n + 1)) * (arr.mpp / 1000.0) ** 2
    misses = [k for k in range(1, n + 1) if k not in hit]
    return found, len(misses), sum(1 for k in misses if sizes[k - 1] >= 0.001)


def _rates(prob: np.ndarray, label: np.ndarray, thr: float) -> dict[str, float]:
    pred = prob >= thr
    pos, neg = label.sum(), (~label).sum()
    return {
        "threshold": thr,
        "sensitivity": float((pred & label).sum() / pos) if pos else float("nan"),
        "specificity": float((~pred & ~label).sum() / neg) if neg else float("nan"),
    }


def evaluate_slide(
    clf: OnnxModel,
    seg: OnnxModel,
    c_arr: SlideArrays,
    s_arr: SlideArrays,
    thresholds: Mapping[str, Any],
) -> dict[str, Any]:
    """All measurements for one held-out slide."""
    prob, label, tissue = classifier_grid(clf, c_arr)
    gate = (prob >= float(thresholds["gate_probability"])) & tissue
    tile = seg.patch_size
    grid = (-(-s_arr.image.shape[0] // tile), -(-s_arr.image.shape[1] // tile))
    run = gate_tiles(gate, clf.mpp * clf.patch_size, seg.mpp * tile, grid)
    thr = float(thresholds["tumour_probability"])
    two_stage = segment(seg, s_arr, run) >= thr
    full = segment(seg, s_arr) >= thr
    found, false_pos, false_pos_large = _deposits(s_arr, two_stage)
    return {
        "seed": c_arr.slide.seed,
        "clf_prob": prob[tissue],
        "clf_label": label[tissue],
        "dice_two_stage": dice(two_stage, s_arr.mask),
        "dice_full": dice(full, s_arr.mask),
        "tumour": bool(s_arr.mask.any()),
        "predicted_positive": bool(two_stage.any()),
        "deposits": found,
        "false_positive_components": false_pos,
        "false_positive_components_large": false_pos_large,
        "tiles_run": int(run.sum()),
        "tiles_total": int(run.size),
    }


def summarise(results: Sequence[dict[str, Any]], gate: float) -> dict[str, Any]:
    """Pool per-slide results into the numbers the model card reports."""
    prob = np.concatenate([r["clf_prob"] for r in results])
    label = np.concatenate([r["clf_label"] for r in results])
    pos = [r for r in results if r["tumour"]]
    neg = [r for r in results if not r["tumour"]]
    deps = [d for r in results for d in r["deposits"]]
    by_cat = {c: [d["detected"] for d in deps if d["category"] == c] for c in ("itc", "micro", "macro")}
    d2 = [r["dice_two_stage"] for r in pos]
    d1 = [r["dice_full"] for r in pos]
    return {
        "slides": len(results),
        "tumour_slides": len(pos),
        "negative_slides": len(neg),
        "patches": int(label.size),
        "positive_patches": int(label.sum()),
        "patch_auc": float(roc_auc_score(label, prob)) if 0 < label.sum() < label.size else None,
        "patch_at_gate": _rates(prob, label, gate),
        "patch_at_0.5": _rates(prob, label, 0.5),
        "dice_two_stage_mean": float(np.mean(d2)),
        "dice_two_stage_sd": float(np.std(d2)),
        "dice_full_mean": float(np.mean(d1)),
        "dice_full_sd": float(np.std(d1)),
        "slide_sensitivity": sum(r["predicted_positive"] for r in pos) / max(len(pos), 1),
        "slide_specificity": sum(not r["predicted_positive"] for r in neg) / max(len(neg), 1),
        "deposits_detected": {c: f"{sum(v)}/{len(v)}" for c, v in by_cat.items() if v},
        "false_positive_components": sum(r["false_positive_components"] for r in results),
        "false_positive_components_large": sum(r["false_positive_components_large"] for r in results),
        "segmenter_tiles_run": f"{sum(r['tiles_run'] for r in results)}/{sum(r['tiles_total'] for r in results)}",
        "per_slide": [{k: v for k, v in r.items() if not k.startswith("clf_")} for r in results],
    }

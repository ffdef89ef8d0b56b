"""Held-out evaluation of an nnU-Net bundle on synthetic cases, through NnUNetRunner."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from data import case_images, make_case
from scipy import ndimage

from dicomnode.inference.nnunet import NnUNetRunner

_CONNECTIVITY = np.ones((3, 3, 3), bool)


@dataclass
class Tally:
    """Counts accumulated over the held-out cases."""

    cases: int = 0
    nodes: int = 0
    detected: int = 0
    large: int = 0  # short axis >= 7 mm
    large_detected: int = 0
    class_correct: int = 0
    false_positive_components: int = 0
    seconds: list[float] = field(default_factory=list)
    overlap: dict[str, list[int]] = field(default_factory=dict)  # name -> [2|A∩B|, |A|+|B|]

    def add_dice(self, name: str, pred: np.ndarray, truth: np.ndarray) -> None:
        acc = self.overlap.setdefault(name, [0, 0])
        acc[0] += 2 * int(np.count_nonzero(pred & truth))
        acc[1] += int(np.count_nonzero(pred) + np.count_nonzero(truth))

    def dice(self, name: str) -> float:
        num, den = self.overlap[name]
        return num / den if den else float("nan")


def _score_nodes(tally: Tally, case, image: sitk.Image, pred: np.ndarray) -> None:
    pred_nodes, _ = ndimage.label(pred >= 4, structure=_CONNECTIVITY)
    truth_nodes, _ = ndimage.label(case.labels >= 4, structure=_CONNECTIVITY)
    matched: set[int] = set()
    for node in case.nodes:
        i, j, k = image.TransformPhysicalPointToIndex(node.center_lps)
        component = truth_nodes == truth_nodes[k, j, i]
        hits = set(np.unique(pred_nodes[component])) - {0}
        tally.nodes += 1
        tally.large += node.short_axis_mm >= 7.0
        if not hits:
            continue
        matched |= hits
        tally.detected += 1
        tally.large_detected += node.short_axis_mm >= 7.0
        voxels = pred[np.isin(pred_nodes, list(hits))]
        positive = np.count_nonzero(voxels == 4) > np.count_nonzero(voxels == 5)
        tally.class_correct += positive == node.positive
    tally.false_positive_components += len(set(np.unique(pred_nodes)) - {0} - matched)


def evaluate(runner: NnUNetRunner, seeds: list[int]) -> Tally:
    """Run the runner on each held-out seed and accumulate detection/class/Dice counts."""
    tally = Tally()
    for seed in seeds:
        case = make_case(seed)
        image, _ = case_images(case)
        start = time.perf_counter()
        pred = runner.predict(sitk.GetArrayFromImage(image), image.GetSpacing()[::-1])
        tally.seconds.append(time.perf_counter() - start)
        tally.cases += 1
        truth = case.labels
        tally.add_dice("node", pred >= 4, truth >= 4)
        for value, name in ((4, "node_positive"), (5, "node_negative")):
            tally.add_dice(name, pred == value, truth == value)
        for value, name in ((1, "internal_iliac"), (2, "obturator"), (3, "external_iliac")):
            tally.add_dice(name, pred == value, truth == value)
        _score_nodes(tally, case, image, pred)
    return tally


def metrics(tally: Tally) -> dict[str, float | int]:
    """Flat metrics for the model card."""
    out: dict[str, float | int] = {
        "held_out_cases": tally.cases,
        "truth_nodes": tally.nodes,
        "nodes_detected": tally.detected,
        "detection_rate": tally.detected / max(tally.nodes, 1),
        "detection_rate_short_axis_ge_7mm": tally.large_detected / max(tally.large, 1),
        "nodes_short_axis_ge_7mm": tally.large,
        "class_accuracy_detected": tally.class_correct / max(tally.detected, 1),
        "false_positive_components": tally.false_positive_components,
        "median_inference_s": float(np.median(tally.seconds)) if tally.seconds else float("nan"),
    }
    for name in tally.overlap:
        out[f"dice_{name}"] = tally.dice(name)
    return out

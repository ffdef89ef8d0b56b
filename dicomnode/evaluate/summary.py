"""Aggregates shared by the MRI and WSI evaluations: per-case records → headline figures.

Every headline figure is given pooled (over all cases' counts) with its bootstrap 95 %
interval (resampling cases), and where it is also a per-case figure, as mean ± SD over
the cases where it is defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dicomnode.evaluate.metrics import binary_rates, bootstrap_ci

__all__ = ["binary_block", "case_dice", "dice_block", "mean_sd", "ratio_block"]

Record = dict[str, Any]


def mean_sd(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample SD of the defined values (``n`` = how many)."""
    xs = np.array([v for v in values if v is not None], dtype=float)
    return {"n": int(xs.size), "mean": float(xs.mean()) if xs.size else None,
            "sd": float(xs.std(ddof=1)) if xs.size > 1 else None}


def binary_block(records: Sequence[Record], truth: str = "truth", predicted: str = "predicted") -> dict[str, Any]:
    """ACC/SEN/SPE/PPV/NPV of a case-level binary call with bootstrap intervals.

    Cases without a reference (``truth`` is ``None``) are left out and counted.
    """
    usable = [r for r in records if r.get(truth) is not None and r.get(predicted) is not None]

    def rate(key: str) -> Any:
        return lambda rs: binary_rates([r[truth] for r in rs], [r[predicted] for r in rs])[key]

    counts = binary_rates([r[truth] for r in usable], [r[predicted] for r in usable])
    out: dict[str, Any] = {k: counts[k] for k in ("tp", "fp", "tn", "fn", "n")}
    for key in ("acc", "sen", "spe", "ppv", "npv"):
        out[key] = bootstrap_ci(usable, rate(key)).to_json()
    out["cases_without_reference"] = len(records) - len(usable)
    return out


def ratio_block(records: Sequence[Record], num: str, den: str) -> dict[str, Any]:
    """Pooled ``sum(num) / sum(den)`` with a bootstrap interval, and its per-case mean ± SD."""
    def pooled(rs: Sequence[Record]) -> float | None:
        d = sum(r[den] for r in rs)
        return None if d == 0 else sum(r[num] for r in rs) / d

    per_case = [None if r[den] == 0 else r[num] / r[den] for r in records]
    return {"pooled": bootstrap_ci(list(records), pooled).to_json(), "per_case": mean_sd(per_case)}


def case_dice(record: Record) -> float | None:
    """Dice of one case from its ``overlap``, ``truth_voxels``, ``pred_voxels`` (None if both empty)."""
    total = record["truth_voxels"] + record["pred_voxels"]
    return None if total == 0 else 2.0 * record["overlap"] / total


def dice_block(records: Sequence[Record]) -> dict[str, Any]:
    """Dice per case (mean ± SD, bootstrap interval of the mean) and pooled over all voxels."""
    values = [case_dice(r) for r in records]
    defined = [v for v in values if v is not None]
    total = sum(r["truth_voxels"] + r["pred_voxels"] for r in records)

    def mean(vs: Sequence[float]) -> float | None:
        return float(np.mean(vs)) if len(vs) else None

    return {
        **mean_sd(values),
        "mean_ci": bootstrap_ci(defined, mean).to_json(),
        "pooled": None if total == 0 else 2.0 * sum(r["overlap"] for r in records) / total,
        "values": defined,
    }

"""Paired comparison of two bundles on the same cases (``--compare A B``).

* case status: exact McNemar test on "A correct" vs "B correct" per case with a reference;
* Dice: paired bootstrap of the mean per-case Dice (cases where both are defined);
* sensitivity: paired bootstrap of the case-level sensitivity (cases resampled together).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dicomnode.evaluate.metrics import binary_rates, mcnemar, paired_bootstrap

__all__ = ["compare_records"]

Record = dict[str, Any]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _sen(records: Sequence[Record]) -> float | None:
    return binary_rates([r["truth"] for r in records], [r["predicted"] for r in records])["sen"]


def compare_records(a: Sequence[Record], b: Sequence[Record]) -> dict[str, Any]:
    """Paired differences B − A (see the module docstring)."""
    by_case = {r["case"]: r for r in b}
    pairs = [(ra, by_case[ra["case"]]) for ra in a
             if ra["case"] in by_case and not ra["error"] and not by_case[ra["case"]]["error"]]
    judged = [(x, y) for x, y in pairs if x.get("truth") is not None and x.get("predicted") is not None
              and y.get("predicted") is not None]
    test = mcnemar([x["predicted"] == x["truth"] for x, _ in judged], [y["predicted"] == x["truth"] for x, y in judged])
    dice_pairs = [(x["dice"], y["dice"]) for x, y in pairs if x.get("dice") is not None and y.get("dice") is not None]
    return {
        "n_paired_cases": len(pairs),
        "status_mcnemar": {"n": len(judged), **test.to_json()},
        "dice_mean": {"n": len(dice_pairs), **paired_bootstrap(dice_pairs, _mean).to_json()},
        "sensitivity": {"n": len(judged), **paired_bootstrap(judged, _sen).to_json()},
    }

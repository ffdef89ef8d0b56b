"""The metrics of the studies, as pure functions over numpy arrays.

Every figure that cannot be computed (a sensitivity without positive cases, a Dice of two
empty masks, a kappa when both raters always give the same single answer) is ``None``,
never a made-up 0 or 1: the report prints it as "n/a" and aggregates skip it.

* :func:`binary_rates` — ACC, SEN (recall), SPE, PPV (precision), NPV from 0/1 labels;
* :func:`weighted_f1` — F1 per class weighted by class support (IMDRF SaMD, ResNet50 study);
* :func:`roc_curve`, :func:`roc_auc` — ROC points and the area under them (ties handled);
* :func:`dice`, :func:`confusion_matrix`, :func:`cohen_kappa`, :func:`bland_altman`;
* :func:`bootstrap_ci` — percentile 95 % interval of a statistic, resampling *cases*;
* :func:`mcnemar` — exact McNemar test of two paired binary outcomes;
* :func:`paired_bootstrap` — difference of a statistic between two paired runs with its
  interval and a two-sided bootstrap p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "BlandAltman",
    "Interval",
    "McNemar",
    "PairedDifference",
    "binary_rates",
    "bland_altman",
    "bootstrap_ci",
    "cohen_kappa",
    "confusion_matrix",
    "dice",
    "mcnemar",
    "paired_bootstrap",
    "roc_auc",
    "roc_curve",
    "weighted_f1",
]

T = TypeVar("T")
#: Bootstrap resamples and the seed (fixed: the same cases give the same intervals).
N_BOOTSTRAP, SEED = 2000, 20260101


def _bool(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=bool).ravel()


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def binary_rates(truth: Any, predicted: Any) -> dict[str, float | int | None]:
    """Counts and rates of a binary decision.

    Parameters
    ----------
    truth, predicted
        Same-length 0/1 (or bool) sequences; 1 = positive.

    Returns
    -------
    dict
        ``tp fp tn fn n`` and ``acc sen spe ppv npv`` (``None`` when the denominator is 0:
        ``sen`` without positives, ``spe`` without negatives, ``acc`` without cases).
    """
    t, p = _bool(truth), _bool(predicted)
    if t.shape != p.shape:
        raise ValueError(f"truth has {t.size} values, predicted {p.size}")
    tp, fp = int((t & p).sum()), int((~t & p).sum())
    tn, fn = int((~t & ~p).sum()), int((t & ~p).sum())
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": int(t.size),
        "acc": _ratio(tp + tn, t.size), "sen": _ratio(tp, tp + fn), "spe": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
    }


def weighted_f1(truth: Any, predicted: Any) -> float | None:
    """F1 of each class (positive and negative) averaged with weights = class support.

    A class that is present but never predicted has F1 0; ``None`` without cases.
    """
    t, p = _bool(truth), _bool(predicted)
    if t.size == 0:
        return None
    total = 0.0
    for cls_t, cls_p in ((t, p), (~t, ~p)):
        support = int(cls_t.sum())
        if support == 0:
            continue
        tp = int((cls_t & cls_p).sum())
        total += support * (2 * tp / (support + int(cls_p.sum())))
    return total / t.size


def roc_curve(truth: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (false-positive rate, true-positive rate, threshold), from (0, 0) to (1, 1).

    A case is called positive when ``score >= threshold``; tied scores move together.
    Rates are NaN for a class that has no cases.
    """
    t = _bool(truth)
    s = np.asarray(score, dtype=float).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], dtype=int)
    tps, fps = np.cumsum(t)[last], np.cumsum(~t)[last]
    pos, neg = int(t.sum()), int((~t).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tps / pos] if pos else np.full(last.size + 1, np.nan)
        fpr = np.r_[0.0, fps / neg] if neg else np.full(last.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(truth: Any, score: Any) -> float | None:
    """Area under the ROC curve (trapezoids; ``None`` unless both classes are present)."""
    fpr, tpr, _ = roc_curve(truth, score)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return None
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def dice(a: Any, b: Any) -> float | None:
    """Dice overlap 2|A∩B| / (|A|+|B|) of two same-shape masks (``None`` when both are empty)."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape:
        raise ValueError(f"masks differ in shape: {x.shape} vs {y.shape}")
    total = int(x.sum()) + int(y.sum())
    return None if total == 0 else 2.0 * int((x & y).sum()) / total


def confusion_matrix(truth: Sequence[T], predicted: Sequence[T], labels: Sequence[T]) -> np.ndarray:
    """Counts ``m[i, j]`` of truth ``labels[i]`` predicted as ``labels[j]`` (others ignored)."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        if t in index and p in index:
            out[index[t], index[p]] += 1
    return out


def cohen_kappa(a: Sequence[T], b: Sequence[T], labels: Sequence[T] | None = None) -> float | None:
    """Cohen's kappa of two raters over the same cases.

    ``None`` without cases, or when chance agreement is 1 (both raters always gave the same
    one answer: agreement beyond chance is undefined).
    """
    labels = list(labels) if labels is not None else sorted({*a, *b}, key=str)
    m = confusion_matrix(a, b, labels).astype(float)
    n = m.sum()
    if n == 0:
        return None
    observed = np.trace(m) / n
    expected = float((m.sum(axis=1) @ m.sum(axis=0)) / n**2)
    return None if expected >= 1.0 else float((observed - expected) / (1.0 - expected))


@dataclass(frozen=True)
class BlandAltman:
    """Agreement of paired measurements: ``diff = a - b``; limits = mean ± 1.96 SD."""

    n: int
    mean_diff: float | None
    sd_diff: float | None
    lower: float | None
    upper: float | None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"n": self.n, "mean_diff": self.mean_diff, "sd_diff": self.sd_diff,
                "loa_lower": self.lower, "loa_upper": self.upper}


def bland_altman(a: Any, b: Any) -> BlandAltman:
    """Mean difference and 95 % limits of agreement of ``a - b`` (sample SD; needs 2 pairs)."""
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"a has {x.size} values, b {y.size}")
    diff = x - y
    if diff.size == 0:
        return BlandAltman(0, None, None, None, None)
    mean = float(diff.mean())
    if diff.size < 2:
        return BlandAltman(1, mean, None, None, None)
    sd = float(diff.std(ddof=1))
    return BlandAltman(int(diff.size), mean, sd, mean - 1.96 * sd, mean + 1.96 * sd)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap 95 % interval (``None`` parts when undefined)."""

    value: float | None
    low: float | None
    high: float | None

    def to_json(self) -> dict[str, float | None]:
        """JSON form."""
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


def _resampled(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    cases: Sequence[T],
    statistic: Callable[[Sequence[T]], float | None],
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = SEED,
    level: float = 0.95,
) -> Interval:
    """``statistic(cases)`` with a percentile interval from resampling the cases.

    Resamples whose statistic is ``None`` (e.g. no positive case drawn) are left out; the
    interval is ``None`` when fewer than half of them are usable.
    """
    value = statistic(cases) if cases else None
    if value is None or len(cases) < 2:
        return Interval(value, None, None)
    draws = [statistic([cases[i] for i in idx]) for idx in _resampled(len(cases), n_boot, seed)]
    usable = np.array([d for d in draws if d is not None], dtype=float)
    if usable.size < n_boot / 2:
        return Interval(value, None, None)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(usable, [tail, 100 - tail])
    return Interval(value, float(low), float(high))


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: ``b`` = only A correct, ``c`` = only B correct."""

    b: int
    c: int
    p_value: float

    def to_json(self) -> dict[str, float | int]:
        """JSON form."""
        return {"only_a_correct": self.b, "only_b_correct": self.c, "p_value": self.p_value}


def mcnemar(correct_a: Any, correct_b: Any) -> McNemar:
    """Exact (binomial) two-sided McNemar test of paired correct/incorrect outcomes."""
    from scipy.stats import binomtest

    a, b = _bool(correct_a), _bool(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"A has {a.size} outcomes, B {b.size}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return McNemar(only_a, only_b, min(1.0, p))


@dataclass(frozen=True)
class PairedDifference:
    """``statistic(B) - statistic(A)`` over the same cases, bootstrap interval and p-value."""

    a: float | None
    b: float | None
    diff: Interval
    p_value: float | None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"a": self.a, "b": self.b, "diff": self.diff.to_json(), "p_value": self.p_value}


def paired_bootstrap(
    pairs: Sequence[tuple[T, T]],
    statistic: Callable[[Sequence[T]], float | None],
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = SEED,
) -> PairedDifference:
    """Difference B − A of ``statistic`` when both runs saw the same cases (``pairs[i] = (a_i, b_i)``).

    Cases are resampled *together*, so the pairing is kept. The p-value is twice the smaller
    share of resampled differences on either side of 0.
    """
    a_all, b_all = [p[0] for p in pairs], [p[1] for p in pairs]
    a, b = (statistic(a_all), statistic(b_all)) if pairs else (None, None)
    if a is None or b is None:
        return PairedDifference(a, b, Interval(None, None, None), None)
    diffs = []
    for idx in _resampled(len(pairs), n_boot, seed) if len(pairs) > 1 else []:
        sa, sb = statistic([a_all[i] for i in idx]), statistic([b_all[i] for i in idx])
        if sa is not None and sb is not None:
            diffs.append(sb - sa)
    if len(diffs) < n_boot / 2:
        return PairedDifference(a, b, Interval(b - a, None, None), None)
    d = np.asarray(diffs)
    low, high = np.percentile(d, [2.5, 97.5])
    p = min(1.0, 2 * min(float((d <= 0).mean()), float((d >= 0).mean())))
    return PairedDifference(a, b, Interval(b - a, float(low), float(high)), p)

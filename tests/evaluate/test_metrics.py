"""The metric functions against small examples computed by hand, incl. the degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicomnode.evaluate.metrics import (
    binary_rates,
    bland_altman,
    bootstrap_ci,
    cohen_kappa,
    confusion_matrix,
    dice,
    mcnemar,
    paired_bootstrap,
    roc_auc,
    roc_curve,
    weighted_f1,
)


def test_binary_rates_by_hand() -> None:
    # truth 1 1 1 0 0 0 0 ; predicted 1 1 0 1 0 0 0 → tp 2, fn 1, fp 1, tn 3
    r = binary_rates([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0])
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (2, 1, 1, 3)
    assert r["acc"] == pytest.approx(5 / 7)
    assert r["sen"] == pytest.approx(2 / 3)
    assert r["spe"] == pytest.approx(3 / 4)
    assert r["ppv"] == pytest.approx(2 / 3)
    assert r["npv"] == pytest.approx(3 / 4)


def test_binary_rates_degenerate() -> None:
    no_positives = binary_rates([0, 0, 0], [0, 1, 0])
    assert no_positives["sen"] is None and no_positives["spe"] == pytest.approx(2 / 3)
    all_positives = binary_rates([1, 1], [1, 0])
    assert all_positives["spe"] is None and all_positives["sen"] == 0.5
    assert binary_rates([], [])["acc"] is None


def test_weighted_f1_by_hand() -> None:
    # positive class: tp 2, support 3, predicted 3 → F1 4/6; negative: tp 3, support 4, predicted 4 → 6/8
    f1 = weighted_f1([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0])
    assert f1 == pytest.approx((3 * 4 / 6 + 4 * 6 / 8) / 7)
    # no positives at all, one false positive: only the negative class counts, F1 = 2·2/(3+2)
    assert weighted_f1([0, 0, 0], [0, 1, 0]) == pytest.approx(0.8)
    assert weighted_f1([1, 1], [1, 1]) == 1.0
    assert weighted_f1([], []) is None


def test_roc_and_auc_by_hand() -> None:
    truth = [1, 1, 0, 1, 0, 0]
    score = [0.9, 0.8, 0.7, 0.6, 0.6, 0.1]  # the 0.6 tie holds one positive and one negative
    fpr, tpr, thr = roc_curve(truth, score)
    assert list(thr[1:]) == [0.9, 0.8, 0.7, 0.6, 0.1]
    assert np.allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert np.allclose(fpr, [0, 0, 0, 1 / 3, 2 / 3, 1])
    # pairs (pos, neg) ranked right: 3·3 = 9 pairs, 0.6 vs 0.6 counts half, 0.6 < 0.7 wrong → 7.5/9
    assert roc_auc(truth, score) == pytest.approx(7.5 / 9)
    assert roc_auc([0, 0], [0.2, 0.3]) is None and roc_auc([1, 1], [0.2, 0.3]) is None
    assert roc_auc([0, 1], [0.2, 0.3]) == 1.0


def test_dice() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :3] = True  # 3 voxels
    b[0, 1:] = True  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(4 / 6)
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) is None
    with pytest.raises(ValueError, match="shape"):
        dice(a, b[:2])


def test_confusion_matrix_and_kappa_by_hand() -> None:
    r1 = ["pos", "pos", "neg", "neg", "pos", "neg", "neg", "neg", "pos", "neg"]
    r2 = ["pos", "neg", "neg", "neg", "pos", "neg", "pos", "neg", "pos", "neg"]
    m = confusion_matrix(r1, r2, ["pos", "neg"])
    assert m.tolist() == [[3, 1], [1, 5]]
    # po = 0.8, pe = 0.4·0.4 + 0.6·0.6 = 0.52 → κ = 0.28/0.48
    assert cohen_kappa(r1, r2) == pytest.approx(0.28 / 0.48)
    assert cohen_kappa(r1, r1) == pytest.approx(1.0)
    assert cohen_kappa(["neg"] * 4, ["neg"] * 4) is None  # chance agreement 1: undefined
    assert cohen_kappa([], []) is None
    assert confusion_matrix(["a", "x"], ["b", "a"], ["a", "b"]).tolist() == [[0, 1], [0, 0]]


def test_bland_altman_by_hand() -> None:
    ba = bland_altman([10.0, 8.0, 7.0, 5.0], [9.0, 8.0, 8.0, 3.0])  # diffs 1, 0, -1, 2
    assert ba.mean_diff == pytest.approx(0.5)
    sd = math.sqrt(((0.5**2) + (0.5**2) + (1.5**2) + (1.5**2)) / 3)
    assert ba.sd_diff == pytest.approx(sd)
    assert (ba.lower, ba.upper) == (pytest.approx(0.5 - 1.96 * sd), pytest.approx(0.5 + 1.96 * sd))
    assert bland_altman([], []).mean_diff is None
    one = bland_altman([3.0], [1.0])
    assert one.mean_diff == 2.0 and one.upper is None


def mean(xs):
    return float(np.mean(xs)) if len(xs) else None


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible() -> None:
    values = [0.2, 0.4, 0.5, 0.6, 0.9, 0.7, 0.3, 0.8]
    ci = bootstrap_ci(values, mean)
    assert ci.value == pytest.approx(np.mean(values))
    assert ci.low < ci.value < ci.high
    assert min(values) <= ci.low and ci.high <= max(values)
    assert bootstrap_ci(values, mean) == ci
    assert bootstrap_ci([5.0] * 6, mean).low == 5.0  # no spread, no uncertainty
    assert bootstrap_ci([0.5], mean).low is None  # one case: no interval
    # a statistic undefined in most resamples (needs the one positive case) gives no interval
    rare = [(1, 1)] + [(0, 0)] * 9
    ci_rare = bootstrap_ci(rare, lambda cs: binary_rates([c[0] for c in cs], [c[1] for c in cs])["sen"])
    assert ci_rare.value == 1.0


def test_mcnemar_exact() -> None:
    a = [1, 1, 1, 1, 1, 1, 0, 1]
    b = [0, 0, 0, 0, 0, 0, 0, 1]
    res = mcnemar(a, b)
    assert (res.b, res.c) == (6, 0)
    assert res.p_value == pytest.approx(2 * 0.5**6)
    assert mcnemar([1, 0], [1, 0]).p_value == 1.0


def test_paired_bootstrap_keeps_pairs() -> None:
    # B is better than A by exactly 0.1 on every case: the interval has no width
    pairs = [(x, x + 0.1) for x in (0.3, 0.5, 0.6, 0.8, 0.2, 0.7)]
    res = paired_bootstrap(pairs, mean)
    assert res.diff.value == pytest.approx(0.1)
    assert res.diff.low == pytest.approx(0.1) and res.diff.high == pytest.approx(0.1)
    assert res.p_value == 0.0
    same = paired_bootstrap([(x, x) for x in (0.3, 0.5, 0.6)], mean)
    assert same.diff.value == 0.0 and same.p_value == 1.0

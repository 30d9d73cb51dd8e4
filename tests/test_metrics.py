"""Metrics against hand-computed small cases and against scikit-learn."""

import json
import math
from fractions import Fraction as F

import numpy as np
import pytest
from sklearn import metrics as skm

from liposome_bench.metrics import (
    CLASS_METRICS,
    OVERALL_METRICS,
    compute_metrics,
    summarise_folds,
)
from liposome_bench.results import FoldResult

CLASSES = ["a", "b", "c"]

# Confusion matrix of this case (rows true, columns predicted):
#   a: [2, 1, 1]   b: [1, 1, 0]   c: [0, 0, 1]
Y_TRUE = [0, 0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 2, 1, 0, 2]
HAND = {
    # class: (tpr, tnr, ppv, npv, f1 = 2TP/(2TP+FP+FN), f1_thesis = 2/(1/TPR+1/TNR))
    "a": (F(2, 4), F(2, 3), F(2, 3), F(2, 4), F(4, 7), 2 / (F(4, 2) + F(3, 2))),
    "b": (F(1, 2), F(4, 5), F(1, 2), F(4, 5), F(2, 4), 2 / (F(2, 1) + F(5, 4))),
    "c": (F(1, 1), F(5, 6), F(1, 2), F(1, 1), F(2, 3), 2 / (F(1, 1) + F(6, 5))),
}


def test_per_class_metrics_match_hand_computed_values():
    m = compute_metrics(Y_TRUE, Y_PRED, CLASSES)
    np.testing.assert_array_equal(m.confusion, [[2, 1, 1], [1, 1, 0], [0, 0, 1]])
    for name, expected in HAND.items():
        got = [getattr(m[name], k) for k in CLASS_METRICS]
        np.testing.assert_allclose(got, [float(v) for v in expected], rtol=1e-12)
    assert (m["a"].tp, m["a"].fn, m["a"].fp, m["a"].tn) == (2, 2, 1, 2)
    assert [c.support for c in m.per_class] == [4, 2, 1]


def test_overall_metrics_match_hand_computed_values():
    m = compute_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert m.n == 7
    assert m.accuracy == pytest.approx(4 / 7)
    assert m.balanced_accuracy == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert m.macro_f1 == pytest.approx(float((F(4, 7) + F(1, 2) + F(2, 3)) / 3))
    np.testing.assert_allclose(
        m.confusion_normalised, [[2 / 4, 1 / 4, 1 / 4], [1 / 2, 1 / 2, 0], [0, 0, 1]]
    )


def test_thesis_f1_is_the_harmonic_mean_of_tpr_and_tnr_not_standard_f1():
    m = compute_metrics(Y_TRUE, Y_PRED, CLASSES)
    b = m["b"]
    assert b.f1_thesis == pytest.approx(2 * b.tpr * b.tnr / (b.tpr + b.tnr))
    assert b.f1 == pytest.approx(2 * b.ppv * b.tpr / (b.ppv + b.tpr))
    assert b.f1_thesis != pytest.approx(b.f1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.choice(3, size=300, p=[0.7, 0.2, 0.1])
    # A noisy classifier: right 70 % of the time.
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 3, 300))
    m = compute_metrics(y_true, y_pred, CLASSES)
    labels = [0, 1, 2]
    np.testing.assert_array_equal(m.confusion, skm.confusion_matrix(y_true, y_pred, labels=labels))
    np.testing.assert_allclose(
        m.confusion_normalised,
        skm.confusion_matrix(y_true, y_pred, labels=labels, normalize="true"),
    )
    tpr = skm.recall_score(y_true, y_pred, labels=labels, average=None)
    ppv = skm.precision_score(y_true, y_pred, labels=labels, average=None)
    f1 = skm.f1_score(y_true, y_pred, labels=labels, average=None)
    for i, c in enumerate(m.per_class):
        assert c.tpr == pytest.approx(tpr[i])
        assert c.ppv == pytest.approx(ppv[i])
        assert c.f1 == pytest.approx(f1[i])
        # TNR and NPV are recall and precision of the "rest" class.
        neg_true, neg_pred = y_true != i, y_pred != i
        assert c.tnr == pytest.approx(skm.recall_score(neg_true, neg_pred))
        assert c.npv == pytest.approx(skm.precision_score(neg_true, neg_pred))
    assert m.accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert m.macro_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert m.mcc == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))


def test_class_never_predicted_gives_nan_precision_and_zero_f1():
    m = compute_metrics([0, 0, 1, 2], [0, 0, 0, 2], CLASSES)
    b = m["b"]
    assert b.tpr == 0 and b.f1 == 0 and b.f1_thesis == 0
    assert math.isnan(b.ppv)
    assert b.npv == pytest.approx(3 / 4)


def test_class_absent_from_truth_and_predictions_is_nan_and_left_out_of_averages():
    m = compute_metrics([0, 0, 1], [0, 1, 1], CLASSES)
    c = m["c"]
    assert all(math.isnan(getattr(c, k)) for k in ("tpr", "ppv", "f1", "f1_thesis"))
    assert c.tnr == 1.0
    assert np.isnan(m.confusion_normalised[2]).all()
    assert m.balanced_accuracy == pytest.approx((1 / 2 + 1) / 2)
    assert m.macro_f1 == pytest.approx((m["a"].f1 + m["b"].f1) / 2)


def test_mcc_is_nan_when_every_prediction_is_one_class():
    m = compute_metrics([0, 1, 2, 0], [0, 0, 0, 0], CLASSES)
    assert math.isnan(m.mcc)
    assert m.accuracy == 0.5


def test_empty_predictions_do_not_crash():
    m = compute_metrics([], [], CLASSES)
    assert m.n == 0 and math.isnan(m.accuracy) and math.isnan(m.mcc)
    json.dumps(m.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([0, 1], [0], "y_true has 2 labels but y_pred has 1"),
        ([0, 3], [0, 1], "y_true holds class index 3"),
        ([0, 1], [-1, 1], "y_pred holds class index -1"),
    ],
)
def test_bad_inputs_raise_one_line_errors(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(y_true, y_pred, CLASSES)


def _fold(fold, y_true, y_pred):
    n = len(y_true)
    return FoldResult(
        model="m",
        fold=fold,
        ids=[f"{fold}-{i}" for i in range(n)],
        y_true=np.asarray(y_true),
        y_pred=np.asarray(y_pred),
        scores=np.zeros((n, 0)),
        score_names=[],
        score_kind="decision",
    )


def _random_folds(seed, k=4):
    rng = np.random.default_rng(seed)
    folds = []
    for f in range(k):
        y_true = np.concatenate([[0, 1, 2], rng.choice(3, size=40, p=[0.6, 0.3, 0.1])])
        y_pred = np.where(rng.random(43) < 0.6, y_true, rng.integers(0, 3, 43))
        folds.append(_fold(f, y_true, y_pred))
    return folds


def test_summarise_folds_averages_confusion_matrices_like_the_thesis_tables():
    folds = _random_folds(0)
    s = summarise_folds(folds, CLASSES)
    raw = [skm.confusion_matrix(r.y_true, r.y_pred, labels=[0, 1, 2]) for r in folds]
    norm = [
        skm.confusion_matrix(r.y_true, r.y_pred, labels=[0, 1, 2], normalize="true") for r in folds
    ]
    np.testing.assert_array_equal(s.confusion_sum, np.sum(raw, axis=0))
    np.testing.assert_allclose(s.confusion_mean, np.mean(raw, axis=0))
    np.testing.assert_allclose(s.confusion_normalised_mean, np.mean(norm, axis=0))
    np.testing.assert_allclose(s.confusion_normalised_mean.sum(axis=1), 1.0)
    assert s.folds == [0, 1, 2, 3]
    assert s.support == list(np.sum(raw, axis=(0, 2)))


def test_summarise_folds_mean_and_std_over_folds():
    folds = _random_folds(1)
    s = summarise_folds(folds, CLASSES)
    for i, name in enumerate(CLASSES):
        values = [
            skm.recall_score(r.y_true, r.y_pred, labels=[0, 1, 2], average=None)[i] for r in folds
        ]
        assert s.per_class[name]["tpr"].mean == pytest.approx(np.mean(values))
        assert s.per_class[name]["tpr"].std == pytest.approx(np.std(values, ddof=1))
        assert s.per_class[name]["tpr"].n == len(folds)
    accs = [skm.accuracy_score(r.y_true, r.y_pred) for r in folds]
    assert s.overall["accuracy"].mean == pytest.approx(np.mean(accs))
    pooled_true = np.concatenate([r.y_true for r in folds])
    pooled_pred = np.concatenate([r.y_pred for r in folds])
    assert s.pooled.macro_f1 == pytest.approx(
        skm.f1_score(pooled_true, pooled_pred, average="macro")
    )
    assert set(s.per_class["a"]) == set(CLASS_METRICS)
    assert set(s.overall) == set(OVERALL_METRICS)


def test_summarise_folds_skips_undefined_values_and_counts_them():
    # Fold 1 never predicts "c", so its PPV of "c" is undefined.
    folds = [_fold(0, [0, 1, 2, 2], [0, 1, 2, 0]), _fold(1, [0, 1, 2], [0, 1, 0])]
    s = summarise_folds(folds, CLASSES)
    ppv = s.per_class["c"]["ppv"]
    assert ppv.n == 1 and ppv.mean == 1.0 and math.isnan(ppv.std)
    assert s.per_class["c"]["tpr"].mean == pytest.approx((0.5 + 0.0) / 2)


def test_summarise_folds_normalised_mean_ignores_folds_without_the_class():
    folds = [_fold(0, [0, 1, 2], [0, 1, 1]), _fold(1, [0, 1], [1, 1])]
    s = summarise_folds(folds, CLASSES)
    np.testing.assert_allclose(s.confusion_normalised_mean[2], [0, 1, 0])
    np.testing.assert_allclose(s.confusion_normalised_mean[0], [0.5, 0.5, 0])


def test_summary_to_dict_is_strict_json():
    s = summarise_folds([_fold(0, [0, 1, 2], [0, 0, 0])], CLASSES)
    text = json.dumps(s.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["per_class"]["b"]["ppv"]["mean"] is None  # NaN -> null
    assert back["confusion_sum"] == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]


def test_summarise_no_folds_is_an_error():
    with pytest.raises(ValueError, match="No finished folds"):
        summarise_folds([], CLASSES)

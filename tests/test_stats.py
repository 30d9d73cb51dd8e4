"""Bootstrap intervals, McNemar's test and paired comparisons on hand-made cases."""

import math

import numpy as np
import pytest

from liposome_bench import stats
from liposome_bench.results import FoldResult

CLASSES = ["unilamellar", "multilamellar", "uncertain"]


def _noisy_predictions(n, accuracy, seed, k=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < accuracy, y, rng.integers(0, k, n))
    return y, pred


def test_confusion_counts_by_hand():
    y = [0, 0, 1, 1, 2]
    p = [0, 1, 1, 1, 0]
    cm = stats.confusion_counts(y, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_confusion_counts_of_resamples_match_one_by_one():
    y, p = _noisy_predictions(50, 0.6, seed=3)
    idx = np.random.default_rng(0).integers(0, 50, size=(7, 50))
    stacked = stats.confusion_counts(y, p, 3, idx)
    for b in range(7):
        assert np.array_equal(stacked[b], stats.confusion_counts(y[idx[b]], p[idx[b]], 3))


def test_metrics_from_confusion_by_hand():
    # Class 0: TP 1, FN 1, FP 1, TN 2.
    cm = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    m = stats.metric_arrays(cm)
    assert m["tpr"][0] == pytest.approx(1 / 2)
    assert m["tnr"][0] == pytest.approx(2 / 3)
    assert m["ppv"][0] == pytest.approx(1 / 2)
    assert m["npv"][0] == pytest.approx(2 / 3)
    assert m["f1"][0] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert m["f1_thesis"][0] == pytest.approx(2 / (1 / (1 / 2) + 1 / (2 / 3)))
    assert m["accuracy"] == pytest.approx(3 / 5)
    # Class 2 is never predicted: its PPV is unknown, not 0.
    assert np.isnan(m["ppv"][2])
    assert m["tpr"][2] == 0.0


def test_overall_metrics_agree_with_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, matthews_corrcoef

    y, p = _noisy_predictions(400, 0.7, seed=1)
    m = stats.metric_arrays(stats.confusion_counts(y, p, 3))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, p))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert np.allclose(m["f1"], f1_score(y, p, average=None))


def test_bootstrap_interval_covers_the_estimate_and_is_seeded():
    y, p = _noisy_predictions(300, 0.7, seed=2)
    a = stats.bootstrap_metrics(y, p, 3, n_resamples=500, seed=4)
    b = stats.bootstrap_metrics(y, p, 3, n_resamples=500, seed=4)
    c = stats.bootstrap_metrics(y, p, 3, n_resamples=500, seed=5)
    for name in stats.CLASS_METRICS:
        est, ci = a[name]["estimate"], a[name]["ci"]
        assert np.all(ci[:, 0] <= est) and np.all(est <= ci[:, 1]), name
        assert np.all(ci[:, 1] - ci[:, 0] > 0), name
        assert np.array_equal(ci, b[name]["ci"])
    assert not np.array_equal(a["f1"]["ci"], c["f1"]["ci"])
    for name in stats.OVERALL_METRICS:
        assert a[name]["ci"][0] <= a[name]["estimate"] <= a[name]["ci"][1], name


def test_bootstrap_interval_narrows_with_more_particles():
    small = stats.bootstrap_metrics(*_noisy_predictions(60, 0.7, seed=6), 3, seed=0)
    large = stats.bootstrap_metrics(*_noisy_predictions(3000, 0.7, seed=6), 3, seed=0)
    width = lambda r: r["f1"]["ci"][:, 1] - r["f1"]["ci"][:, 0]  # noqa: E731
    assert np.all(width(large) < width(small))


def test_bootstrap_keeps_class_sizes():
    y = np.array([0] * 20 + [1] * 5 + [2] * 2)
    idx = stats.bootstrap_indices(y, 30, np.random.default_rng(0))
    assert idx.shape == (30, len(y))
    counts = np.stack([np.bincount(y[row], minlength=3) for row in idx])
    assert np.all(counts == [20, 5, 2])


def test_perfect_predictions_have_a_degenerate_interval():
    y = np.array([0, 1, 2] * 10)
    r = stats.bootstrap_metrics(y, y, 3, n_resamples=200)
    assert np.all(r["tpr"]["ci"] == 1.0)
    assert np.all(r["mcc"]["ci"] == 1.0)


def test_mcnemar_exact_by_hand():
    # 10 particles only A gets right, 2 only B: 12 discordant, exact test.
    a = np.array([True] * 10 + [False] * 2 + [True] * 30 + [False] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 30 + [False] * 5)
    r = stats.mcnemar_test(a, b)
    assert (r.only_a, r.only_b, r.method) == (10, 2, "exact")
    # Two-sided: 2 * P(X <= 2), X ~ Binomial(12, 1/2).
    expected = 2 * (math.comb(12, 0) + math.comb(12, 1) + math.comb(12, 2)) / 2**12
    assert r.p_value == pytest.approx(expected)
    assert stats.mcnemar_verdict(r, "svm", "cnn") == "svm more often correct"


def test_mcnemar_chi_square_by_hand():
    a = np.array([True] * 30 + [False] * 12)
    b = ~a
    r = stats.mcnemar_test(a, b)
    assert r.method == "chi2-cc"
    statistic = (abs(30 - 12) - 1) ** 2 / 42
    assert r.statistic == pytest.approx(statistic)
    # Chi-square with 1 degree of freedom: P(X > x) = erfc(sqrt(x / 2)).
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)))


def test_mcnemar_without_discordant_particles():
    a = np.array([True, False, True])
    r = stats.mcnemar_test(a, a)
    assert (r.only_a, r.only_b, r.p_value) == (0, 0, 1.0)
    assert stats.mcnemar_verdict(r, "a", "b") == stats.NO_DIFFERENCE


def test_identical_models_show_no_significant_difference():
    y, p = _noisy_predictions(200, 0.6, seed=7)
    c = stats.compare_models(y, p, p.copy(), CLASSES, name_a="svm", name_b="lipnet-4")
    assert c.verdict == stats.NO_DIFFERENCE
    for cls in CLASSES:
        assert c.f1_difference[cls]["difference"] == 0.0
        assert c.f1_difference[cls]["verdict"] == stats.NO_DIFFERENCE


def test_clearly_better_model_is_named():
    y, worse = _noisy_predictions(600, 0.4, seed=8)
    better = y.copy()
    c = stats.compare_models(y, worse, better, CLASSES, name_a="svm", name_b="lipnet-4")
    assert c.verdict == "lipnet-4 more often correct"
    assert c.mcnemar.p_value < stats.ALPHA
    for cls in CLASSES:
        d = c.f1_difference[cls]
        assert d["ci"][0] > 0, cls
        assert d["ci"][0] <= d["difference"] <= d["ci"][1]
        assert d["verdict"] == "lipnet-4 better"
    assert c.to_dict()["mcnemar"]["only_b"] == c.mcnemar.only_b


@pytest.mark.parametrize(
    "low, high, verdict",
    [
        (-0.1, 0.2, stats.NO_DIFFERENCE),
        (0.0, 0.3, stats.NO_DIFFERENCE),
        (0.01, 0.3, "B better"),
        (-0.3, -0.01, "A better"),
        (float("nan"), float("nan"), stats.NO_DIFFERENCE),
    ],
)
def test_difference_verdict(low, high, verdict):
    assert stats.difference_verdict(low, high, "A", "B") == verdict


def _fold_results(y, pred, k, model="svm"):
    out = []
    for f in range(k):
        sel = np.arange(len(y)) % k == f
        n = int(sel.sum())
        out.append(
            FoldResult(
                model=model,
                fold=f,
                ids=[str(i) for i in np.flatnonzero(sel)],
                y_true=y[sel],
                y_pred=pred[sel],
                scores=np.zeros((n, 3)),
                score_names=CLASSES,
                score_kind="probability",
            )
        )
    return out


def test_summarise_model_reports_fold_spread_and_pooled_interval():
    y, p = _noisy_predictions(150, 0.7, seed=9)
    summary = stats.summarise_model(_fold_results(y, p, 5), CLASSES, n_resamples=300)
    pooled = stats.metric_arrays(stats.confusion_counts(y, p, 3))
    fold_f1 = [
        stats.metric_arrays(stats.confusion_counts(y[i::5], p[i::5], 3))["f1"][1] for i in range(5)
    ]
    entry = summary["per_class"]["multilamellar"]["f1"]
    assert entry["mean"] == pytest.approx(np.mean(fold_f1))
    assert entry["std"] == pytest.approx(np.std(fold_f1, ddof=1))
    assert entry["pooled"] == pytest.approx(pooled["f1"][1])
    assert entry["ci"][0] <= entry["pooled"] <= entry["ci"][1]
    assert summary["folds"] == [0, 1, 2, 3, 4] and summary["n_particles"] == 150
    assert np.allclose(np.sum(summary["confusion"]["normalised_mean"], axis=1), 1.0)
    assert np.array_equal(summary["confusion"]["sum"], stats.confusion_counts(y, p, 3))


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_metrics_agree_with_the_metrics_module(seed):
    from liposome_bench.metrics import compute_metrics

    # Small, lopsided cases so some classes are never predicted or absent.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    y = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    p = rng.choice(3, n, p=[0.8, 0.1, 0.1])
    ours = stats.metric_arrays(stats.confusion_counts(y, p, 3))
    theirs = compute_metrics(y, p, CLASSES)
    for name in stats.CLASS_METRICS:
        expected = [getattr(c, name) for c in theirs.per_class]
        assert np.allclose(ours[name], expected, equal_nan=True), name
    for name in stats.OVERALL_METRICS:
        assert np.allclose(ours[name], getattr(theirs, name), equal_nan=True), name


# Headline verdict: corrected resampled t-test, Holm ----------------------------


def test_corrected_resampled_ttest_by_hand():
    from scipy.stats import t as student_t

    d = [0.1, 0.2, 0.0, 0.3, 0.1]
    out = stats.corrected_resampled_ttest(d, n_train=80, n_test=20)
    # mean 0.14; sample variance 0.052 / 4 = 0.013; correction 1/5 + 20/80 = 0.45
    t = 0.14 / math.sqrt(0.45 * 0.013)
    assert out["mean"] == pytest.approx(0.14)
    assert out["t"] == pytest.approx(t) and out["t"] == pytest.approx(1.830417, abs=1e-5)
    assert out["df"] == 4 and out["n"] == 5
    assert out["p"] == pytest.approx(2 * student_t.sf(t, 4))
    # The correction makes it more cautious than the naive paired t-test.
    naive = 0.14 / math.sqrt(0.013 / 5)
    assert out["p"] > 2 * student_t.sf(naive, 4)


def test_corrected_ttest_edge_cases():
    nan = stats.corrected_resampled_ttest([0.2], 80, 20)
    assert nan["n"] == 1 and math.isnan(nan["p"]) and math.isnan(nan["t"])
    same = stats.corrected_resampled_ttest([0.0, 0.0, 0.0], 80, 20)
    assert same["t"] == 0.0 and same["p"] == 1.0
    constant = stats.corrected_resampled_ttest([0.1, 0.1, 0.1, float("nan")], 80, 20)
    assert constant["n"] == 3 and constant["p"] == 0.0 and constant["t"] == math.inf


@pytest.mark.parametrize(
    "p, adjusted",
    [
        # sorted 0.01 (x4), 0.03 (x3), 0.04 (x2 = 0.08, raised to 0.09), 0.2 (x1)
        ([0.01, 0.04, 0.03, 0.2], [0.04, 0.09, 0.09, 0.2]),
        ([0.6, 0.7], [1.0, 1.0]),
        ([float("nan"), 0.02, 0.5], [float("nan"), 0.04, 0.5]),
        ([0.05], [0.05]),
    ],
)
def test_holm_by_hand(p, adjusted):
    np.testing.assert_allclose(stats.holm(p), adjusted, equal_nan=True)


class _Fold:
    def __init__(self, fold, y_true, y_pred):
        self.fold, self.y_true, self.y_pred = fold, np.array(y_true), np.array(y_pred)


def test_compare_fold_scores_by_hand():
    # Fold 0: A's F1 (0.8, 2/3), B's (1, 1); fold 1: A's (1, 1), B's (0, 6/7).
    a = [_Fold(0, [0, 0, 1, 1], [0, 0, 1, 0]), _Fold(1, [0, 1, 1, 1], [0, 1, 1, 1])]
    b = [_Fold(0, [0, 0, 1, 1], [0, 0, 1, 1]), _Fold(1, [0, 1, 1, 1], [1, 1, 1, 1])]
    out = stats.compare_fold_scores([a], [b], ["x", "y"], n_particles=8, name_a="svm", name_b="cnn")
    assert out["n_scores"] == 2 and out["n_train"] == 4 and out["n_test"] == 4
    x = out["per_class"]["x"]
    # differences 0.2 and -1.0: mean -0.4, variance 0.72, correction 1/2 + 4/4
    assert x["difference"] == pytest.approx(-0.4)
    assert x["t"] == pytest.approx(-0.4 / math.sqrt(1.5 * 0.72))
    y = out["per_class"]["y"]
    assert y["difference"] == pytest.approx((1 / 3 - 1 / 7) / 2)
    macro = out["macro_f1"]
    assert macro["difference"] == pytest.approx(((1 - 11 / 15) + (3 / 7 - 1)) / 2)
    assert out["accuracy"]["difference"] == pytest.approx(((1 - 0.75) + (0.75 - 1)) / 2)
    # Holm over the two classes and macro F1, in that order.
    family = [x["p"], y["p"], macro["p"]]
    np.testing.assert_allclose([x["p_holm"], y["p_holm"], macro["p_holm"]], stats.holm(family))
    assert out["accuracy"]["p_holm"] is None
    assert not any(e["significant"] for e in (x, y, macro))
    assert x["verdict"] == stats.NO_DIFFERENCE
    # The interval matches the test: it holds 0 when p > 0.05.
    assert x["ci"][0] < 0 < x["ci"][1]


def test_consistent_difference_is_significant_after_holm_and_names_the_winner():
    rng = np.random.default_rng(0)
    runs_a, runs_b = [], []
    for repeat in range(3):
        fa, fb = [], []
        for fold in range(5):
            y = np.repeat([0, 1], [40, 40])
            good = y.copy()
            bad = y.copy()
            bad[rng.choice(80, 16, replace=False)] ^= 1
            fa.append(_Fold(fold, y, bad))
            fb.append(_Fold(fold, y, good))
        runs_a.append(fa)
        runs_b.append(fb)
    out = stats.compare_fold_scores(
        runs_a, runs_b, ["x", "y"], n_particles=400, name_a="svm", name_b="cnn"
    )
    assert out["n_scores"] == 15
    for e in (*out["per_class"].values(), out["macro_f1"]):
        assert e["significant"] and e["verdict"] == "cnn better"
        assert e["p_holm"] >= e["p"]
    # Swapping the models swaps the winner.
    swapped = stats.compare_fold_scores(
        runs_b, runs_a, ["x", "y"], n_particles=400, name_a="cnn", name_b="svm"
    )
    assert swapped["macro_f1"]["verdict"] == "cnn better"
    assert swapped["macro_f1"]["difference"] == pytest.approx(-out["macro_f1"]["difference"])


def test_headline_verdict_says_what_the_variance_rests_on():
    a = [_Fold(f, [0, 1, 1], [0, 1, 0]) for f in range(3)]
    b = [_Fold(f, [0, 1, 1], [0, 1, 1]) for f in range(3)]
    one = stats.headline_verdict({"svm": [a], "cnn": [b]}, "svm", ["x", "y"], 9, k=3)
    assert one["n_scores"] == 3 and one["repeats"] == 1
    assert "from the 3 folds only" in one["note"]
    assert one["test"] == stats.TTEST_NAME
    three = stats.headline_verdict({"svm": [a] * 3, "cnn": [b] * 3}, "svm", ["x", "y"], 9, k=3)
    assert three["n_scores"] == 9 and three["comparisons"][0]["n_scores"] == 9
    assert "3 repeats x 3 folds = 9" in three["note"]


def test_dietterich_5x2cv_by_hand():
    from scipy.stats import t as student_t

    d = [[0.10, 0.06], [0.02, 0.04], [0.05, 0.05], [0.08, 0.00], [0.03, 0.07]]
    out = stats.dietterich_5x2cv_ttest(d)
    # s_i^2: 0.0008, 0.0002, 0, 0.0032, 0.0008; mean 0.001; t = 0.10 / sqrt(0.001)
    assert out["t"] == pytest.approx(0.10 / math.sqrt(0.001))
    assert out["df"] == 5 and out["n"] == 10
    assert out["p"] == pytest.approx(2 * student_t.sf(0.10 / math.sqrt(0.001), 5))
    assert out["mean"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        stats.dietterich_5x2cv_ttest([0.1, 0.2])


def test_five_repeats_of_two_folds_use_the_5x2cv_test():
    def run(preds):
        return [_Fold(f, [0, 0, 1, 1], p) for f, p in enumerate(preds)]

    svm = [run([[0, 1, 1, 1], [0, 0, 1, 0]])] * 5
    cnn = [run([[0, 0, 1, 1], [0, 0, 1, 1]])] * 5
    verdict = stats.headline_verdict({"svm": svm, "cnn": cnn}, "svm", ["x", "y"], 8, k=2)
    assert verdict["test"] == stats.FIVE_BY_TWO_NAME
    assert "5x2cv" in verdict["note"]
    macro = verdict["comparisons"][0]["macro_f1"]
    assert macro["df"] == 5 and macro["ci"] == [None, None]
    three = stats.headline_verdict({"svm": svm[:3], "cnn": cnn[:3]}, "svm", ["x", "y"], 8, k=2)
    assert three["test"] == stats.TTEST_NAME


_OUTCOMES = set()


@pytest.mark.parametrize("seed", range(12))
def test_interval_beside_a_holm_verdict_matches_it(seed, outcomes=_OUTCOMES):
    """Issue 25: an interval never excludes 0 on a row whose Holm-adjusted
    verdict is "no significant difference", and always does on a significant
    row; each no-difference row states the smallest detectable difference."""
    rng = np.random.default_rng(seed)
    runs_a, runs_b = [], []
    for repeat in range(2):
        fa, fb = [], []
        for fold in range(5):
            y = np.repeat([0, 1, 2], [40, 30, 10])
            pa, pb = y.copy(), y.copy()
            bad = rng.choice(80, rng.integers(8, 20), replace=False)
            pa[bad] = (y[bad] + 1) % 3
            bad = rng.choice(80, rng.integers(2, 14), replace=False)
            pb[bad] = (y[bad] + 1) % 3
            fa.append(_Fold(fold, y, pa))
            fb.append(_Fold(fold, y, pb))
        runs_a.append(fa)
        runs_b.append(fb)
    out = stats.compare_fold_scores(
        runs_a, runs_b, ["x", "y", "z"], n_particles=400, name_a="svm", name_b="cnn"
    )
    for e in (*out["per_class"].values(), out["macro_f1"]):
        low, high = e["ci"]
        excludes_zero = low > 0 or high < 0
        assert excludes_zero == e["significant"], e
        # the Holm-matched interval is never narrower than the unadjusted 95 % one
        assert high - low >= e["ci_unadjusted"][1] - e["ci_unadjusted"][0] - 1e-12
        if not e["significant"]:
            assert e["detectable"] > 0
            assert "cannot tell differences smaller than ±" in stats.verdict_text(e)
    outcomes.update(e["significant"] for e in (*out["per_class"].values(), out["macro_f1"]))
    advice = stats.repeats_suggestion(out, 2, 5, 600.0)
    assert advice["repeats"] == 3 and advice["estimated_s"] == pytest.approx(900.0)
    assert advice["detectable"] < out["macro_f1"]["detectable"]


def test_detectable_difference_by_hand():
    from scipy.stats import t as student_t

    d = np.array([0.1, -0.05, 0.02, 0.07, 0.0])
    se = math.sqrt((1 / 5 + 100 / 400) * d.var(ddof=1))
    assert stats.detectable_difference(d, 400, 100, 0.05) == pytest.approx(
        student_t.ppf(0.975, 4) * se
    )


def test_the_interval_cases_held_both_verdicts():
    """The seeds above give significant rows and rows whose unadjusted 95 %
    interval excludes 0 while Holm says no difference (the case the
    Holm-matched interval exists for)."""
    for seed in range(12):
        test_interval_beside_a_holm_verdict_matches_it(seed)
    assert _OUTCOMES == {True, False}


def test_compare_fold_scores_takes_a_measured_training_size():
    """A learning-curve point trains on a subsample: its n_train, not the
    dataset minus the test fold, goes into the variance correction."""
    a = [_Fold(f, [0, 0, 1, 1, 1], [0, 1, 1, 1, p]) for f, p in enumerate([0, 1, 1])]
    b = [_Fold(f, [0, 0, 1, 1, 1], [0, 0, 1, 1, p]) for f, p in enumerate([1, 0, 1])]
    whole = stats.compare_fold_scores([a], [b], ["x", "y"], 15)
    sub = stats.compare_fold_scores([a], [b], ["x", "y"], 15, n_train=4)
    assert whole["n_train"] == 10 and sub["n_train"] == 4 and sub["n_test"] == 5
    d = np.array(
        [fb - fa for fa, fb in zip(*(stats.fold_scores(r, 2)["macro_f1"] for r in (a, b)))]
    )
    for out, n_train in ((whole, 10), (sub, 4)):
        expected = stats.corrected_resampled_ttest(d, n_train, 5)
        assert out["macro_f1"]["p"] == pytest.approx(expected["p"])
    assert sub["macro_f1"]["p"] > whole["macro_f1"]["p"]


@pytest.mark.parametrize(
    "mean, p, expected",
    [
        (0.1, 0.01, "cnn better"),
        (-0.1, 0.01, "svm better"),
        (0.1, 0.05, stats.NO_DIFFERENCE),
        (0.1, None, stats.NO_DIFFERENCE),
        (0.1, float("nan"), stats.NO_DIFFERENCE),
        (0.0, 0.0, stats.NO_DIFFERENCE),
    ],
)
def test_verdict_word(mean, p, expected):
    assert stats.verdict_word(mean, p, "svm", "cnn") == expected


def test_mcnemar_verdict_reads_a_result_or_its_dict():
    result = stats.McNemarResult(only_a=3, only_b=20, statistic=3.0, p_value=0.001, method="exact")
    as_dict = {"only_a": 3, "only_b": 20, "statistic": 3.0, "p_value": 0.001, "method": "exact"}
    assert stats.mcnemar_verdict(result, "svm", "cnn") == "cnn more often correct"
    assert stats.mcnemar_verdict(as_dict, "svm", "cnn") == "cnn more often correct"
    assert stats.mcnemar_verdict(as_dict, "svm", "cnn", alpha=0.0005) == stats.NO_DIFFERENCE

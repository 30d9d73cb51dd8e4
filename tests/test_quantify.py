"""Class fractions per sample corrected with the cross-validated rates (issue 22)."""

import numpy as np
import pytest

from liposome_bench import quantify
from liposome_bench.errors import ConfigError

CONFUSION = np.array(
    [
        [0.90, 0.05, 0.05],  # P(predicted | true), rows: true class
        [0.10, 0.80, 0.10],
        [0.20, 0.20, 0.60],
    ]
)


def _sample(rng, n, prevalence):
    y = rng.choice(3, n, p=prevalence)
    y_pred = np.array([rng.choice(3, p=CONFUSION[t]) for t in y])
    probabilities = np.eye(3)[y_pred] * 0.7 + 0.1
    return y, y_pred, probabilities


def test_adjusted_fractions_are_closer_to_the_truth_than_raw_counts():
    """Synthetic: rates measured at one class balance, samples at others."""
    rng = np.random.default_rng(0)
    rates = quantify.cv_rates(*_sample(rng, 3000, [0.6, 0.3, 0.1]))
    errors = {m: [] for m in quantify.METHODS}
    for _ in range(30):
        prevalence = rng.dirichlet(np.ones(3))
        y, y_pred, p = _sample(rng, 300, prevalence)
        truth = np.bincount(y, minlength=3) / len(y)
        for m, v in quantify.estimate_fractions(y_pred, p, rates).items():
            assert v.sum() == pytest.approx(1.0) and (v >= 0).all()
            errors[m].append(np.abs(v - truth).mean())
    mae = {m: float(np.mean(e)) for m, e in errors.items()}
    assert mae["acc"] < mae["raw"] / 2 and mae["pacc"] < mae["raw"] / 2, mae


def test_fractions_by_group_has_intervals_and_truth():
    rng = np.random.default_rng(1)
    rates = quantify.cv_rates(*_sample(rng, 600, [0.5, 0.3, 0.2]))
    y, y_pred, p = _sample(rng, 90, [0.5, 0.3, 0.2])
    groups = np.array(["a", "b", "c"])[np.arange(90) % 3]
    table = quantify.fractions_by_group(
        groups, y_pred, p, rates, ["u", "m", "x"], y_true=y, n_resamples=50
    )
    assert len(table) == 3 * 3 * 3 and set(table["method"]) == set(quantify.METHODS)
    assert (
        (table["low"] <= table["fraction"] + 1e-9) & (table["fraction"] <= table["high"] + 1e-9)
    ).all()
    raw = table[(table.method == "raw") & (table.group == "a")]
    expected = np.bincount(y_pred[groups == "a"], minlength=3) / 30
    assert np.allclose(raw["fraction"], expected)
    with pytest.raises(ConfigError, match="n_resamples"):
        quantify.fractions_by_group(groups, y_pred, p, rates, ["u", "m", "x"], n_resamples=0)


def test_unidentified_classes_are_those_scored_no_higher_than_another_class():
    """Built-in lamellarity data, cross-validated SVM (benchmarks/bench_quantify.py):
    'uncertain' is almost never predicted, so its row of M is no larger on its
    own particles than on unilamellar ones."""
    rates = np.array(
        [
            [0.957, 0.067, 0.75],
            [0.039, 0.933, 0.25],
            [0.003, 0.0, 0.0],
        ]
    )
    assert quantify.unidentified_classes(rates, ["u", "m", "x"]) == ["x"]
    assert quantify.unidentified_classes(CONFUSION.T, ["u", "m", "x"]) == []


def test_fractions_by_group_names_the_unidentified_classes():
    rng = np.random.default_rng(2)
    y = rng.choice(3, 300, p=[0.6, 0.3, 0.1])
    # 'x' is never predicted: mostly as 'u', sometimes as 'm'
    y_pred = np.where(y == 2, np.where(rng.random(300) < 0.8, 0, 1), y)
    p = np.eye(3)[y_pred] * 0.7 + 0.1
    rates = quantify.cv_rates(y, y_pred, p)
    table = quantify.fractions_by_group(
        np.zeros(300), y_pred, p, rates, ["u", "m", "x"], n_resamples=5
    )
    assert table.attrs["unidentified"] == {"acc": ["x"], "pacc": ["x"]}


def _fold(fold, ids, y_true, y_pred):
    from liposome_bench.results import FoldResult

    return FoldResult(
        model="m",
        fold=fold,
        ids=ids,
        y_true=np.array(y_true),
        y_pred=np.array(y_pred),
        scores=np.zeros((len(ids), 1)),
        score_names=["s"],
        score_kind="probability",
    )


def test_prevalence_error_by_hand():
    """Two folds of two groups each; b is right everywhere, a errs on fold 0."""
    group_of = {"1": "g1", "2": "g1", "3": "g2", "4": "g2", "5": "g3", "6": "g3", "7": "g4"}
    y = {"0": [0, 1, 0, 0], "1": [1, 1, 0]}
    ids = {"0": ["1", "2", "3", "4"], "1": ["5", "6", "7"]}
    a = [_fold(0, ids["0"], y["0"], [0, 0, 1, 0]), _fold(1, ids["1"], y["1"], y["1"])]
    b = [_fold(0, ids["0"], y["0"], y["0"]), _fold(1, ids["1"], y["1"], y["1"])]
    row = quantify.prevalence_error({"a": [a], "b": [b]}, "a", ["u", "m"], group_of, n_particles=7)
    # a: g1 true (0.5, 0.5) raw (1, 0): 0.5 each; g2 true (1, 0) raw (0.5, 0.5): 0.5
    # each; g3, g4 exact. Over 4 groups: 0.25 per class.
    assert row["models"]["a"]["per_class"] == {"u": 0.25, "m": 0.25}
    assert row["models"]["b"]["mean"] == 0.0 and row["models"]["a"]["n_groups"] == 4
    (comp,) = row["comparisons"]
    # per fold, b - a: fold 0 -0.5, fold 1 0.
    assert comp["mean"]["difference"] == pytest.approx(-0.25)
    assert comp["mean"]["n"] == 2 and 0 < comp["mean"]["p"] < 1


def test_intervals_include_the_uncertainty_of_the_rates():
    """Rates from 90 cross-validated particles: resampling them widens the
    adjusted intervals; the raw ones, which do not use them, stay the same."""
    rng = np.random.default_rng(3)
    y_cv, pred_cv, p_cv = _sample(rng, 90, [0.5, 0.3, 0.2])
    rates = quantify.cv_rates(y_cv, pred_cv, p_cv)
    y, y_pred, p = _sample(rng, 200, [0.3, 0.3, 0.4])
    groups = np.array(["a", "b"])[np.arange(200) % 2]
    cv = {"y_true": y_cv, "y_pred": pred_cv, "probabilities": p_cv}
    kwargs = {"n_resamples": 200, "seed": 0}
    fixed = quantify.fractions_by_group(groups, y_pred, p, rates, ["u", "m", "x"], **kwargs)
    both = quantify.fractions_by_group(groups, y_pred, p, rates, ["u", "m", "x"], cv=cv, **kwargs)
    width = {name: t["high"] - t["low"] for name, t in (("fixed", fixed), ("both", both))}
    raw = fixed["method"] == "raw"
    np.testing.assert_allclose(width["both"][raw], width["fixed"][raw])
    np.testing.assert_allclose(both["fraction"], fixed["fraction"])  # same point estimates
    for m in ("acc", "pacc"):
        rows = fixed["method"] == m
        assert width["both"][rows].mean() > 1.2 * width["fixed"][rows].mean(), m

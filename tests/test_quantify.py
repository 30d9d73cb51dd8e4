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

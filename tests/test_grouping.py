"""Folds grouped by micrograph (``--group-by``): no micrograph in two outer
folds, in two inner grid-search folds, or in both the fit and validation
parts of a CNN fold."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from liposome_bench import cnn as cnn_module
from liposome_bench import folds as folds_module
from liposome_bench import svm as svm_module
from liposome_bench.cli import cli
from liposome_bench.dataset import Dataset, Particle, custom_problem, write_export
from liposome_bench.errors import FoldError
from liposome_bench.folds import folds_path, load_or_make_folds, make_folds
from liposome_bench.svm import search_grid


def grouped_dataset(counts, per_micrograph=4, seed=0, key="micrograph"):
    """Particles of each class in runs of ``per_micrograph`` sharing a
    micrograph; micrographs mix classes a little (every 3rd holds two)."""
    problem = custom_problem(list(counts))
    rng = np.random.default_rng(seed)
    labels = [c for c, n in counts.items() for _ in range(n)]
    order = rng.permutation(len(labels))
    particles = []
    for position, i in enumerate(order):
        image = rng.integers(0, 255, (16, 16), dtype=np.uint8)
        meta = {key: f"m{position // per_micrograph:03d}", "operator": "x"}
        particles.append(
            Particle(f"p{i:04d}", labels[i], image, image > 128, pixel_size_nm=1.0, meta=meta)
        )
    return Dataset(problem, particles)


def micrographs_in(folds_of, groups):
    return {g: set(np.unique(folds_of[groups == g]).tolist()) for g in np.unique(groups)}


def test_grouped_outer_folds_keep_every_micrograph_in_one_fold():
    dataset = grouped_dataset({"a": 60, "b": 30, "c": 15})
    folds = load_or_make_folds(dataset, k=5, seed=3, group_by="micrograph")
    groups = np.array([p.meta["micrograph"] for p in dataset.particles])
    assert all(len(f) == 1 for f in micrographs_in(folds.fold_of, groups).values())
    assert sorted(set(folds.fold_of.tolist())) == [0, 1, 2, 3, 4]
    assert folds.group_by == "micrograph"
    # Ungrouped folds of the same data do split micrographs (the point of grouping).
    plain = load_or_make_folds(dataset, k=5, seed=3)
    assert any(len(f) > 1 for f in micrographs_in(plain.fold_of, groups).values())


def test_make_folds_with_groups_is_seeded():
    y = np.repeat([0, 1], [40, 20])
    groups = np.arange(60) // 3
    a = make_folds(y, ["a", "b"], 4, 1, groups)
    np.testing.assert_array_equal(a, make_folds(y, ["a", "b"], 4, 1, groups))
    assert not np.array_equal(a, make_folds(y, ["a", "b"], 4, 2, groups))


@pytest.mark.parametrize(
    "n_groups, k, message",
    [
        (
            3,
            5,
            "5 folds grouped by 'micrograph' need at least 5 groups; the data has 3. "
            "Use --folds 3.",
        ),
        (
            1,
            2,
            "2 folds grouped by 'micrograph' need at least 2 groups; the data has 1. "
            "Group by another key, or drop --group-by.",
        ),
    ],
)
def test_too_few_groups_is_a_clear_error(n_groups, k, message):
    dataset = grouped_dataset({"a": 12, "b": 12}, per_micrograph=24 // n_groups)
    with pytest.raises(FoldError) as exc:
        load_or_make_folds(dataset, k=k, group_by="micrograph")
    assert str(exc.value) == message


def test_missing_key_names_the_key_and_the_available_ones():
    dataset = grouped_dataset({"a": 10, "b": 10})
    with pytest.raises(FoldError) as exc:
        load_or_make_folds(dataset, k=3, group_by="Session")
    assert str(exc.value) == (
        f"--group-by session: particle {dataset.ids[0]} has no 'session' value; "
        "the data's meta keys are micrograph, operator."
    )


def test_stored_grouped_folds_record_the_key_and_refuse_another(tmp_path):
    root = write_export(grouped_dataset({"a": 30, "b": 15}), tmp_path / "export")
    from liposome_bench.dataset import load_dataset

    dataset = load_dataset(root)
    folds = load_or_make_folds(dataset, k=3, group_by="micrograph")
    path = folds_path(root, 3, 0, "micrograph")
    assert folds.path == path and path.name == "k3-seed0-by-micrograph.json"
    assert json.loads(path.read_text())["group_by"] == "micrograph"
    again = load_or_make_folds(load_dataset(root), k=3, group_by="micrograph")
    np.testing.assert_array_equal(again.fold_of, folds.fold_of)
    # A file that claims another key (renamed by hand) is refused.
    plain = folds_path(root, 3, 0)
    plain.write_text(path.read_text())
    with pytest.raises(FoldError) as exc:
        load_or_make_folds(dataset, k=3)
    assert str(exc.value) == (
        f"{plain} holds folds made grouped by 'micrograph', but this run has no --group-by. "
        "Pass --group-by micrograph, or delete the file to make new folds."
    )
    # A hand-edited grouped file that splits a micrograph is refused.
    stored = json.loads(path.read_text())
    first = dataset.particles[0]
    mate = next(
        p for p in dataset.particles[1:] if p.meta["micrograph"] == first.meta["micrograph"]
    )
    stored["folds"][mate.id] = (stored["folds"][first.id] + 1) % 3
    path.write_text(json.dumps(stored))
    with pytest.raises(FoldError, match="grouped folds keep each group in one fold"):
        load_or_make_folds(dataset, k=3, group_by="micrograph")


def test_ungrouped_folds_of_data_with_micrographs_warn_how_to_group():
    messages = []

    class Reporter:
        def message(self, text):
            messages.append(text)

    dataset = grouped_dataset({"a": 20, "b": 10})
    load_or_make_folds(dataset, k=3, reporter=Reporter())
    assert len(messages) == 1 and "Pass --group-by micrograph" in messages[0]
    messages.clear()
    load_or_make_folds(dataset, k=3, group_by="micrograph", reporter=Reporter())
    assert messages == []


def test_inner_grid_search_folds_are_grouped(monkeypatch):
    """search_grid with groups never puts a micrograph in two inner folds."""
    seen = []
    real = folds_module.inner_splitter

    class Recording:
        def __init__(self, splitter):
            self.splitter = splitter

        def split(self, X, y, groups=None):
            for train, test in self.splitter.split(X, y, groups):
                seen.append((groups[train], groups[test]))
                yield train, test

        def get_n_splits(self, *args, **kwargs):
            return self.splitter.get_n_splits(*args, **kwargs)

    # search_grid looks inner_splitter up in svm (imported there at module level).
    monkeypatch.setattr(
        svm_module, "inner_splitter", lambda y, g, n, seed: Recording(real(y, g, n, seed))
    )
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [60, 30])
    X = rng.normal(size=(90, 3)) + y[:, None]
    groups = np.array([f"m{i // 3}" for i in rng.permutation(90)])
    best, _ = search_grid(X, y, C_values=[1.0], gamma_values=[0.5], inner_folds=3, groups=groups)
    assert len(seen) == 3 and best["inner_folds"] == 3
    test_sets = [set(test) for _, test in seen]
    for train, test in seen:
        assert not set(train) & set(test)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not test_sets[i] & test_sets[j]


def test_grouped_validation_split_keeps_micrographs_apart():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], [60, 30, 12])
    groups = np.array([f"m{i // 4}" for i in rng.permutation(len(y))])
    fit, val = cnn_module.split_validation(y, 0.2, np.random.default_rng(0), groups=groups)
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(len(y)))
    assert len(val) and not set(groups[fit]) & set(groups[val])


def test_run_cnn_validation_split_is_grouped(monkeypatch, tmp_path):
    """Within every CNN fold, no micrograph is in both the fit and the
    validation part (training replaced by a stub: only the split is tested)."""
    from liposome_bench.results import ResultsDir

    dataset = grouped_dataset({"a": 48, "b": 24}, per_micrograph=3)
    groups = np.array([p.meta["micrograph"] for p in dataset.particles])
    folds = load_or_make_folds(dataset, k=3, group_by="micrograph")
    splits = []

    class Net:
        def predict(self, x, **kwargs):
            return np.full((len(x), 2), 0.5)

    def fake_train(x_fit, y_fit, x_val, y_val, settings, **kwargs):
        return Net(), {
            "best_epoch": 1,
            "epochs_run": 1,
            "history": {},
            "epoch_counts": [1, 1],
            "train_s": 0.0,
            "samples_per_s": None,
        }

    real_split = cnn_module.split_validation

    def recording_split(y, fraction, rng, groups=None):
        fit, val = real_split(y, fraction, rng, groups=groups)
        splits.append((groups[fit], groups[val]))
        return fit, val

    # run_cnn calls them from its own module
    monkeypatch.setattr(cnn_module.runner, "train_fold", fake_train)
    monkeypatch.setattr(cnn_module.runner, "split_validation", recording_split)
    cnn_module.run_cnn(
        dataset, folds, ResultsDir(tmp_path / "r"), model="lipnet-1", epochs=1, save_models=False
    )
    assert len(splits) == 3
    for fold, (fit_groups, val_groups) in enumerate(splits):
        assert len(val_groups) and not set(fit_groups) & set(val_groups)
        test_groups = set(groups[folds.test_indices(fold)])
        assert not test_groups & (set(fit_groups) | set(val_groups))


def test_cli_group_by_unknown_key_is_one_line(tmp_path):
    root = write_export(grouped_dataset({"a": 20, "b": 10}), tmp_path / "export")
    result = CliRunner().invoke(
        cli,
        ["features", "--data", str(root), "--out", str(tmp_path / "f.csv"), "--group-by", "grid"],
    )
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: --group-by grid: particle ")
    assert last.endswith("has no 'grid' value; the data's meta keys are micrograph, operator.")


def test_cli_features_group_by_writes_grouped_folds(tmp_path):
    root = write_export(grouped_dataset({"a": 30, "b": 15}), tmp_path / "export")
    result = CliRunner().invoke(
        cli,
        [
            "features",
            "--data",
            str(root),
            "--out",
            str(tmp_path / "f.csv"),
            "--group-by",
            "micrograph",
            "--folds",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (root / "folds" / "k3-seed0-by-micrograph.json").is_file()


def test_dataset_info_shows_groups_per_class(tmp_path):
    root = write_export(grouped_dataset({"a": 30, "b": 15}), tmp_path / "export")
    result = CliRunner().invoke(cli, ["dataset", "info", str(root), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    groups = info["groups"]["micrograph"]
    assert groups["n_groups"] == 12  # 45 particles, 4 per micrograph
    assert set(groups["per_class"]) == {"a", "b"}
    assert all(1 <= n <= 12 for n in groups["per_class"].values())


def test_benchmark_group_by_keeps_micrographs_in_one_fold(tmp_path):
    import pandas as pd

    from liposome_bench import comparison
    from liposome_bench.dataset import load_dataset

    dataset = grouped_dataset({"a": 40, "b": 20}, per_micrograph=3)
    root = write_export(dataset, tmp_path / "export")
    summary = comparison.run_benchmark(
        None,
        root,
        cnn_models=[],
        k=3,
        group_by="micrograph",
        out=tmp_path / "out",
        svm_options={"C": 1.0, "gamma": 0.01},
        n_resamples=50,
    )
    folds = summary["folds"]
    assert folds["group_by"] == "micrograph" and folds["n_groups"] == 20
    assert sum(folds["groups_per_fold"]) == 20
    assert "--group-by micrograph" in summary["equivalent_command"]
    table = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"id": str})
    micrograph = {p.id: p.meta["micrograph"] for p in load_dataset(root).particles}
    table["micrograph"] = table["id"].map(micrograph)
    assert (table.groupby("micrograph")["fold"].nunique() == 1).all()
    # The same folder refuses to resume with ungrouped folds.
    from liposome_bench.errors import ResultsError

    with pytest.raises(ResultsError, match="made with folds"):
        comparison.run_benchmark(
            None,
            root,
            cnn_models=[],
            k=3,
            group_by=None,
            out=tmp_path / "out",
            svm_options={"C": 1.0, "gamma": 0.01},
            n_resamples=50,
        )


def test_benchmark_groups_by_the_micrograph_key_by_default(tmp_path):
    """Without --group-by the folds are grouped by the data's micrograph key,
    the first message says so, and no ungrouped warning is given; --no-group
    (group_by=None) gives the old ungrouped folds, with the warning."""
    import pandas as pd

    from liposome_bench import comparison
    from liposome_bench.dataset import load_dataset
    from liposome_bench.progress import NullReporter

    dataset = grouped_dataset({"a": 40, "b": 20}, per_micrograph=3)
    root = write_export(dataset, tmp_path / "export")
    messages = []

    class Reporter(NullReporter):
        def message(self, text):
            messages.append(text)

    common = dict(cnn_models=[], k=3, svm_options={"C": 1.0, "gamma": 0.01}, n_resamples=50)
    summary = comparison.run_benchmark(
        None, root, out=tmp_path / "auto", reporter=Reporter(), **common
    )
    assert summary["folds"]["group_by"] == "micrograph"
    assert "warning" not in summary["folds"]
    assert messages[0].startswith("Folds grouped by 'micrograph' (20 values)")
    assert not any("not grouped" in m for m in messages)
    assert "--group-by micrograph" in summary["equivalent_command"]
    table = pd.read_csv(tmp_path / "auto" / "predictions.csv", dtype={"id": str})
    micrograph = {p.id: p.meta["micrograph"] for p in load_dataset(root).particles}
    assert (table.groupby(table["id"].map(micrograph))["fold"].nunique() == 1).all()

    messages.clear()
    summary = comparison.run_benchmark(
        None, root, out=tmp_path / "none", group_by=None, reporter=Reporter(), **common
    )
    assert summary["folds"]["group_by"] is None
    assert "Pass --group-by micrograph" in summary["folds"]["warning"]
    assert "--no-group" in summary["equivalent_command"]


def test_default_group_key_needs_enough_values_and_every_particle():
    from liposome_bench.folds import default_group_key, resolve_group_by

    dataset = grouped_dataset({"a": 20, "b": 10})
    assert default_group_key(dataset, k=3) == "micrograph"
    assert resolve_group_by(dataset, "auto", 3) == "micrograph"
    assert resolve_group_by(dataset, None, 3) is None
    assert resolve_group_by(dataset, " Session ", 3) == "session"
    n = len({p.meta["micrograph"] for p in dataset.particles})
    assert default_group_key(dataset, k=n // 2) == "micrograph"
    assert default_group_key(dataset, k=n // 2 + 1) is None  # needs 2 k values
    dataset.particles[0].meta.pop("micrograph")
    assert default_group_key(dataset, k=3) is None

"""One orchestration (issue 21 step 3): ``prepare.prepare_run`` and the
dataset fingerprint computed once."""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from liposome_bench import comparison, prepare
from liposome_bench.data import types as dataset_module
from liposome_bench.dataset import Dataset
from liposome_bench.errors import DatasetError, OutputError, ResultsError
from liposome_bench.results import RUN_LOCK_FILE

FIXED_SVM = {"C": 8.0, "gamma": 0.0078125}


@pytest.fixture
def hashes(monkeypatch):
    """Every call of the pixel hash (``data.types.hash_particles``), by dataset size."""
    calls = []
    real = dataset_module.hash_particles

    def counting(problem, particles):
        calls.append(len(particles))
        return real(problem, particles)

    monkeypatch.setattr(dataset_module, "hash_particles", counting)
    return calls


@pytest.fixture
def checks(monkeypatch):
    """Every ``check_trainable`` call made by the orchestration."""
    calls = []
    real = prepare.check_trainable

    def counting(dataset):
        calls.append(len(dataset))
        return real(dataset)

    monkeypatch.setattr(prepare, "check_trainable", counting)
    return calls


def test_a_benchmark_hashes_and_checks_its_dataset_once(tiny_export_copy, tmp_path, hashes, checks):
    """Folds, the results folder's run.json, the summary's dataset facts and
    the fold check all use the fingerprint; its pixels are hashed once."""
    out = tmp_path / "r"
    summary = comparison.run_benchmark(
        None,
        tiny_export_copy,
        cnn_models=[],
        k=3,
        out=out,
        svm_options=FIXED_SVM,
        n_resamples=50,
        estimate=False,
        near_duplicates=False,
    )
    n = summary["dataset"]["n_particles"]
    assert hashes == [n]
    assert checks == [n]
    run = json.loads((out / "run.json").read_text())
    assert summary["dataset"]["fingerprint"] == run["dataset"]["fingerprint"]


def test_the_fingerprint_is_cached_until_the_particles_change(tiny_dataset, hashes):
    dataset = Dataset(tiny_dataset.problem, list(tiny_dataset.particles))
    first = dataset.fingerprint()
    assert dataset.fingerprint() == first and len(hashes) == 1
    copy = pickle.loads(pickle.dumps(dataset))  # as a Dask worker gets it
    assert copy.fingerprint() == first and len(hashes) == 1
    particle = dataset.particles[0]
    image = particle.image.copy()
    image.flat[0] += 1
    dataset.particles[0] = dataclasses.replace(particle, image=image)
    changed = dataset.fingerprint()
    assert changed != first and len(hashes) == 2
    assert changed == dataset_module.hash_particles(dataset.problem, dataset.particles)
    dataset.particles = list(tiny_dataset.particles)  # a new list: hashed again
    assert dataset.fingerprint() == first and len(hashes) == 4


def _folds_state(root):
    """The dataset's stored folds (files and contents), to see none made or changed."""
    folds = root / "folds"
    return {p.name: p.read_bytes() for p in sorted(folds.rglob("*"))} if folds.exists() else None


def test_prepare_run_checks_the_folder_before_reading_the_dataset(tiny_export_copy, tmp_path):
    # The session's shared runs may already have stored folds in the export
    # the copy is made from: what is checked is that none is made or changed.
    before = _folds_state(tiny_export_copy)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="is a file"):
        prepare.prepare_run(tiny_export_copy, out=blocker, k=3, fold_seed=7)
    with pytest.raises(OutputError):
        prepare.prepare_run(tiny_export_copy, out=tiny_export_copy / "results", k=3, fold_seed=7)
    assert _folds_state(tiny_export_copy) == before  # no folds made

    def refuse(folder):
        raise ResultsError(f"{folder}: no.")

    with pytest.raises(ResultsError, match="no."):
        prepare.prepare_run(
            tiny_export_copy, out=tmp_path / "r", check_folder=refuse, k=3, fold_seed=7
        )
    assert _folds_state(tiny_export_copy) == before


def test_prepare_run_gives_the_dataset_folds_and_folder(tiny_export_copy, tmp_path):
    run = prepare.prepare_run(
        tiny_export_copy,
        default_out=lambda dataset: tmp_path / f"svm-{dataset.problem.name}",
        k=3,
        fold_seed=1,
    )
    assert run.out == tmp_path / f"svm-{run.dataset.problem.name}"
    assert (run.folds.k, run.folds.seed) == (3, 1)
    assert run.folds.fingerprint == run.dataset.fingerprint()
    assert run.inputs["--data"] == tiny_export_copy
    assert not run.out.exists()  # nothing written until a model runs
    with run.session():
        assert (run.out / RUN_LOCK_FILE).exists()  # the run lock (tests/test_run_lock.py)


def test_prepare_run_refuses_a_one_class_dataset_before_any_folds(tiny_dataset):
    one = Dataset(
        tiny_dataset.problem,
        [p for p in tiny_dataset.particles if p.label == tiny_dataset.particles[0].label],
    )
    with pytest.raises(DatasetError, match="every particle is of one class"):
        prepare.prepare_run(one, k=3)
    assert np.unique(one.y).size == 1


def test_the_library_runners_refuse_a_one_class_dataset_too(tiny_dataset, tmp_path):
    """``run_svm`` called directly, without ``prepare_run``, refuses one class
    in one line (``ResultsDir.prepare``'s check) instead of failing inside
    LIBSVM."""
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.settings import SVMSettings
    from liposome_bench.svm import run_svm

    one = Dataset(
        tiny_dataset.problem,
        [p for p in tiny_dataset.particles if p.label == tiny_dataset.particles[0].label],
    )
    folds = load_or_make_folds(one, k=3, seed=0)
    with pytest.raises(DatasetError, match="every particle is of one class"):
        run_svm(one, folds, ResultsDir(tmp_path / "r"), SVMSettings(**FIXED_SVM))
    assert not (tmp_path / "r" / "run.json").exists()

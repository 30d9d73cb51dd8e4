"""Session-wide test set-up: a tiny synthetic dataset built once, and an
isolated cache so no test touches the user's ~/.cache."""

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

# The fuzz suite's longer hunt (tests/test_fuzz.py):
#   pytest -m fuzz --hypothesis-profile=long
try:  # the minimum-versions step of .ci/run installs pytest only
    from hypothesis import settings
except ImportError:
    pass
else:
    settings.register_profile("long", max_examples=2000, deadline=None)

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Class counts of the tiny dataset: enough of each class for 3 folds with a
# validation split carved from the training folds.
TINY_COUNTS = {"unilamellar": 24, "multilamellar": 12, "uncertain": 9}


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("LIPOSOME_BENCH_CACHE")
    os.environ["LIPOSOME_BENCH_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LIPOSOME_BENCH_CACHE", None)
    else:
        os.environ["LIPOSOME_BENCH_CACHE"] = old


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(autouse=True)
def _fixtures_stay_unchanged():
    """No test may write into the committed fixtures: commands run on a
    fixture folder itself (to test errors before any work) must not leave
    fold files beside it."""
    before = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/folds"))
    yield
    after = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/folds"))
    assert after == before, "a test wrote folds into fixtures/"


@pytest.fixture(scope="session")
def tiny_dataset():
    """45 synthetic lamellarity particles, in memory."""
    from liposome_bench.synth import generate_dataset

    return generate_dataset("lamellarity", seed=1, counts=TINY_COUNTS)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_dataset):
    """The tiny dataset written as a lab export folder (read-only by convention:
    tests that write folds into it use ``tiny_export_copy``)."""
    from liposome_bench.dataset import write_export

    return write_export(tiny_dataset, tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture
def tiny_export_copy(tmp_path, tiny_export):
    """A private copy of the tiny export that a test may modify."""
    return shutil.copytree(tiny_export, tmp_path / "tiny")


@contextlib.contextmanager
def _built_once(tmp_path_factory, name):
    """A folder shared by every xdist worker of this session, and whether
    this worker must build it: the first worker to take the lock builds it
    (marking it done with a ``.built`` file) while the others wait, then read
    it. Under the basetemp's parent, which all workers of one run share."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / f"shared-{name}"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            built = (folder / ".built").exists()
            if not built:
                shutil.rmtree(folder, ignore_errors=True)  # a half-built one
                folder.mkdir()
            yield folder, not built
            if not built:
                (folder / ".built").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_cross_validation(tmp_path_factory, tiny_export):
    """:func:`cross_validate_tiny`, run once per session however many xdist
    workers ask (test_deploy.py and test_bioimage_package.py each needed it,
    on every worker that ran one of their tests). Read-only: its "root" is
    shared; write beside it, in the test's own folder."""
    from liposome_bench.dataset import load_dataset

    with _built_once(tmp_path_factory, "tiny-cv") as (root, build):
        if build:
            run = cross_validate_tiny(root, tiny_export)
        else:
            run = {
                "root": root,
                "data": root / "data",
                "results": root / "results",
                "dataset": load_dataset(root / "data"),
            }
    return run


def cross_validate_tiny(root, tiny_export) -> dict:
    """An SVM and a one-epoch lipnet-1 (16 px, no augmentation) cross-validated
    on 3 folds of a copy of the tiny export under ``root`` (test_deploy.py,
    test_bioimage_package.py): {"root", "data", "results", "dataset"}."""
    from liposome_bench.cnn import run_cnn
    from liposome_bench.dataset import load_dataset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.svm import run_svm

    data = shutil.copytree(tiny_export, root / "data")
    dataset = load_dataset(data)
    folds = load_or_make_folds(dataset, k=3, seed=0)
    results = ResultsDir(root / "results")
    run_svm(dataset, folds, results)
    run_cnn(
        dataset,
        folds,
        results,
        model="lipnet-1",
        epochs=1,
        input_size=16,
        augment="none",
        save_models=False,
    )
    return {"root": root, "data": data, "results": results.path, "dataset": dataset}


#: The engine tests' tiny settings (test_comparison.py, test_cluster.py): 2 folds
#: (the tiny set's 9 'uncertain' particles allow them), fixed C/gamma (no grid
#: search) and a 1-epoch lipnet-1 at 16 px, float32.
ENGINE_FOLDS = 2
ENGINE_SVM = {"C": 8.0, "gamma": 0.0078125}
ENGINE_CNN = {"epochs": 1, "input_size": 16, "augment": "none", "mixed_precision": False}


class _Messages:
    """A reporter that keeps every message."""

    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)

    def __getattr__(self, name):
        return lambda *a, **k: None


@pytest.fixture(scope="session")
def serial_repeats_run(tmp_path_factory, tiny_export):
    """``run_benchmark`` with ``--repeats 2`` on ENGINE_FOLDS folds of the tiny
    export, serial and in process (ENGINE_SVM, ENGINE_CNN, lipnet-1), run once per
    session however many xdist workers ask: the reference that the local
    Dask cluster (test_comparison.py) and the real cluster (test_cluster.py)
    must reproduce, and the run whose feature and image preparations
    test_comparison.py counts. Read-only.

    Returns {"out": the results folder, "calls": "features"/"images" in the
    order ``features.extract_features`` and ``cnn.prepare_cnn_images`` were
    called, "lines": the reporter's messages}."""
    with _built_once(tmp_path_factory, "serial-repeats") as (root, build):
        if build:
            record = _run_serial_repeats(root / "run", tiny_export)
            (root / "record.json").write_text(json.dumps(record), encoding="utf-8")
    record = json.loads((root / "record.json").read_text(encoding="utf-8"))
    return {"out": root / "run", **record}


def _run_serial_repeats(out, tiny_export) -> dict:
    from liposome_bench import cnn, comparison, features

    calls = []
    real_features, real_images = features.extract_features, cnn.prepare_cnn_images
    messages = _Messages()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            features,
            "extract_features",
            lambda *a, **k: calls.append("features") or real_features(*a, **k),
        )
        patch.setattr(
            cnn,
            "prepare_cnn_images",
            lambda *a, **k: calls.append("images") or real_images(*a, **k),
        )
        comparison.run_benchmark(
            "lamellarity",
            tiny_export,
            cnn_models=["lipnet-1"],
            k=ENGINE_FOLDS,
            repeats=2,
            out=out,
            svm_options=ENGINE_SVM,
            cnn_options=ENGINE_CNN,
            n_resamples=100,
            scheduler="serial",
            reporter=messages,
        )
    return {"calls": calls, "lines": messages.lines}

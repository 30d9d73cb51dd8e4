"""The sweep: its file format, cell names, resume plan, statistics, and real
Dask runs (a LocalCluster of 2 worker processes) that must give what a
serial run of the same cells gives, also when a worker is killed mid-task."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from liposome_bench import stats, sweep
from liposome_bench.cli import cli
from liposome_bench.errors import ConfigError, SweepError
from liposome_bench.results import FoldResult
from liposome_bench.stats import corrected_resampled_ttest, holm

TINY_SWEEP = """
[sweep]
folds = 2

[cnn]
epochs = 1
input_size = 16
augment = "none"
model = ["lipnet-1", "lipnet-2"]
"""


def _write(tmp_path, text, name="grid.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# The file format ----------------------------------------------------------------


def test_axes_are_crossed_and_grids_share_cells(tmp_path):
    config = sweep.load_sweep(
        _write(
            tmp_path,
            """
[cnn]
epochs = 3
input_mode = ["cropped", "masked"]

[[cnn.grid]]
name = "models"
model = ["lipnet-2", "lipnet-4"]

[[cnn.grid]]
name = "augmentation"
augment = ["none", "flip,rotation", "all"]

[svm]
feature_set = ["vironova", "all"]
""",
        )
    )
    by_name = {g.name: g for g in config.grids}
    assert len(by_name["models"].cells) == 4  # 2 models x 2 modes
    assert len(by_name["augmentation"].cells) == 6  # 3 levels x 2 modes
    assert len(by_name["svm"].cells) == 2
    # lipnet-4 with all augmentations (the default) is in both CNN grids: one cell.
    shared = set(by_name["models"].cells) & set(by_name["augmentation"].cells)
    assert len(shared) == 2
    assert len(config.cells) == 4 + 6 - 2 + 2
    cell = config.cell(by_name["augmentation"].cells[1])  # cropped, flip,rotation
    assert cell.settings.augment == ("flip", "rotation") and cell.settings.epochs == 3
    assert set(config.axes) == {"input_mode", "model", "augment", "feature_set"}


def test_cell_names_are_stable_hashes_of_the_settings(tmp_path):
    first = sweep.load_sweep(_write(tmp_path, TINY_SWEEP))
    again = sweep.load_sweep(_write(tmp_path, TINY_SWEEP, "copy.toml"))
    assert [c.id for c in first.cells] == [c.id for c in again.cells]
    assert all(
        c.id.startswith(c.model + "-") and len(c.id) == len(c.model) + 9 for c in first.cells
    )
    changed = sweep.load_sweep(
        _write(tmp_path, TINY_SWEEP.replace("epochs = 1", "epochs = 2"), "changed.toml")
    )
    assert not {c.id for c in first.cells} & {c.id for c in changed.cells}
    # The same settings spelled differently are the same cell.
    spelled = sweep.load_sweep(_write(tmp_path, TINY_SWEEP.replace('"none"', '""'), "s.toml"))
    assert [c.id for c in spelled.cells] == [c.id for c in first.cells]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[cnn]\nmodel = ['lipnet-9']\n",
            "[cnn] (model=lipnet-9): Unknown model 'lipnet-9'; expected one of",
        ),
        ("[cnn]\nepochs = []\n", "[cnn]: axis epochs is an empty list"),
        ("[cnn]\nepoch = 3\n", "[cnn]: unknown setting 'epoch'; valid settings are model,"),
        ("[cnn]\naugment = ['none', 'spin']\n", "Unknown augmentation 'spin'"),
        ("[cnns]\nepochs = 3\n", "unknown table or key 'cnns'"),
        ("[sweep]\nfolds = 1\n[cnn]\n", "[sweep]: folds must be an integer of at least 2"),
        (
            "[[cnn.grid]]\nname = 'a'\nbalance = ['oversample', 'magic']\n",
            "[[cnn.grid]] a (balance=magic): Unknown balancing method 'magic'",
        ),
        ("[svm]\ngrid = ['coarse', 'fine']\n", "[svm] (grid=fine): Unknown grid 'fine'"),
        ("[sweep]\nfolds = 3\n", "no [cnn] or [svm] table"),
        ("[cnn\n", "is not valid TOML"),
    ],
)
def test_bad_sweep_files_are_refused_with_one_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        sweep.load_sweep(path)
    assert str(info.value).startswith(f"{path}")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_thesis_grid_file_is_valid():
    here = os.path.dirname(__file__)
    config = sweep.load_sweep(os.path.join(here, "..", "benchmarks", "thesis_grid.toml"))
    axes = config.axes
    assert set(axes["model"]) >= {"lipnet-1", "lipnet-2", "lipnet-4", "lipnet-4c", "lipnet-6"}
    assert set(axes["input_mode"]) == {"surrounding", "cropped", "masked"}
    assert {"none", "all"} <= set(axes["augment"])
    assert {"oversample", "undersample", "smote"} <= set(axes["balance"])
    assert any(c.kind == "svm" for c in config.cells)


# Statistics ----------------------------------------------------------------------


def test_corrected_resampled_ttest_inflates_the_variance():
    d = np.array([0.10, 0.05, 0.08, 0.12, 0.02])
    out = corrected_resampled_ttest(d, n_train=400, n_test=100)
    corrected_se = np.sqrt(d.var(ddof=1) * (1 / 5 + 100 / 400))
    assert out["t"] == pytest.approx(d.mean() / corrected_se)
    assert out["df"] == 4 and out["n"] == 5
    plain = corrected_resampled_ttest(d, n_train=1e12, n_test=1)
    assert out["p"] > plain["p"]  # the correction makes the test more cautious
    assert np.isnan(corrected_resampled_ttest([0.1], 4, 1)["p"])


def test_holm_adjusts_in_input_order():
    np.testing.assert_allclose(
        holm([0.01, 0.04, np.nan, 0.03]), [0.03, 0.06, np.nan, 0.06], equal_nan=True
    )


def _result(fold, y_true, y_pred):
    n = len(y_true)
    ids = [f"{fold}-{i}" for i in range(n)]
    return FoldResult("m", fold, ids, np.array(y_true), np.array(y_pred), np.zeros((n, 0)), [], "x")


def test_summarise_sweep_tests_the_shared_folds_with_their_measured_sizes(monkeypatch):
    """Issue 21: each pair of cells goes through stats.compare_fold_scores,
    so the t-test's sizes are those of the folds the two cells share (here 2
    of 3 folds, of 6 and 5 of 17 particles: n_test 5.5, n_train 11.5), not
    n (k - 1) / k and n / k."""
    classes = ["x", "y"]
    cells = {
        name: {"kind": "cnn", "model": name, "settings": {"model": name}}
        for name in ("lipnet-1", "lipnet-2")
    }
    record = {
        "dataset": {"classes": classes, "n_particles": 17, "problem": "p"},
        "folds": {"k": 3},
        "axes": {"model": list(cells)},
        "grids": [{"name": "cnn", "axes": {"model": list(cells)}, "cells": list(cells)}],
        "cells": cells,
    }
    y = {0: [0, 0, 0, 1, 1, 1], 1: [0, 0, 0, 1, 1, 1], 2: [0, 0, 1, 1, 1]}
    folds = {
        "lipnet-1": [
            _result(0, y[0], [0, 0, 0, 1, 1, 1]),
            _result(1, y[1], [0, 1, 1, 1, 1, 1]),
            _result(2, y[2], [0, 1, 1, 1, 0]),
        ],
        # fold 0 not finished
        "lipnet-2": [_result(1, y[1], [0, 0, 0, 1, 1, 0]), _result(2, y[2], [0, 0, 1, 1, 1])],
    }
    monkeypatch.setattr(sweep, "read_sweep_json", lambda out: record)
    monkeypatch.setattr(sweep, "load_cell_folds", lambda out, cell, model, cls: folds[cell])
    summary = sweep.summarise_sweep("unused")
    assert [c["class"] for c in summary["comparisons"]] == classes
    holm_p = holm([c["p"] for c in summary["comparisons"]])
    for j, c in enumerate(summary["comparisons"]):
        scores = [stats.fold_scores(folds[m][-2:], 2)["f1"][:, j] for m in cells]
        d = scores[1] - scores[0]
        assert c["n_folds"] == 2 and c["n_train"] == 11.5 and c["n_test"] == 5.5
        measured = corrected_resampled_ttest(d, 11.5, 5.5)
        approximated = corrected_resampled_ttest(d, 17 * 2 / 3, 17 / 3)
        assert c["mean_difference"] == pytest.approx(d.mean())
        assert c["p"] == pytest.approx(measured["p"]) and c["p"] != pytest.approx(approximated["p"])
        assert c["t"] == pytest.approx(measured["t"]) and c["p_holm"] == pytest.approx(holm_p[j])
        assert c["verdict"] == stats.verdict_word(c["mean_difference"], c["p_holm"], *cells)


# Plans and dry runs ---------------------------------------------------------------


def test_plan_skips_finished_folds_and_dry_run_lists_cells(tmp_path, tiny_export_copy):
    path = _write(tmp_path, TINY_SWEEP)
    config = sweep.load_sweep(path)
    out = tmp_path / "out"
    cell = config.cells[0]
    marker = sweep.cell_dir(out, cell.id) / cell.model / "fold-1.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    plan = sweep.plan_sweep(config, out, 2)
    assert plan.total == 4 and (cell.id, 1) not in plan.tasks and len(plan.tasks) == 3

    result = CliRunner().invoke(
        cli, ["sweep", str(path), "--data", str(tiny_export_copy), "--out", str(out), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "2 cells x 2 folds = 4 tasks (3 to run)" in result.output
    for c in config.cells:
        assert c.id in result.output
    assert "Estimated" in result.output and "Nothing was run." in result.output
    assert not (out / "sweep.json").exists()


@pytest.mark.parametrize(
    "address, why",
    [
        ("slurm", "no protocol"),
        ("tcp://host:abc", "port 'abc' is not a number in 1-65535"),
        ("tcp://host:70000", "port '70000' is not a number in 1-65535"),
        ("tcp://host:0", "port '0' is not a number in 1-65535"),
        ("tcp://host", "no port"),
        ("tcp://:8786", "no host"),
        ("ucx://host:8786", "protocol ucx:// is not supported"),
        ("tls://host:8786", "protocol tls:// is not supported"),
        ("tcp://[::1]8786", "an IPv6 host needs [HOST]:PORT"),
    ],
)
def test_cli_refuses_a_scheduler_address_before_any_work(tmp_path, tiny_export_copy, address, why):
    path = _write(tmp_path, TINY_SWEEP)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "sweep",
            str(path),
            "--data",
            str(tiny_export_copy),
            "--out",
            str(out),
            "--scheduler",
            address,
        ],
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: --scheduler {address!r}: {why}; expected {sweep.SCHEDULER_FORMS}."
    ]
    assert not out.exists()


def test_scheduler_addresses_that_are_accepted():
    assert sweep.parse_scheduler("local") is None
    assert sweep.parse_scheduler("tcp://10.0.0.5:8786") == ("10.0.0.5", 8786)
    assert sweep.parse_scheduler("tcp://[::1]:8786") == ("::1", 8786)


def test_cli_refuses_an_unreachable_scheduler_within_the_timeout(tmp_path, tiny_export_copy):
    import socket
    import time

    # A port that nothing listens on: bind one, then close it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = _write(tmp_path, TINY_SWEEP)
    out = tmp_path / "out"
    started = time.perf_counter()
    result = CliRunner().invoke(
        cli,
        [
            "sweep",
            str(path),
            "--data",
            str(tiny_export_copy),
            "--out",
            str(out),
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
            "--connect-timeout",
            "2",
        ],
    )
    assert time.perf_counter() - started < 20
    assert result.exit_code == 2, result.output
    assert (
        f"Error: Cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 2 s"
        in result.output
    )
    assert not out.exists()  # no half-made results folder


def test_probe_times_out_on_a_silent_address(monkeypatch):
    import socket

    seen = {}

    def fake(address, timeout):
        seen.update(address=address, timeout=timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", fake)
    with pytest.raises(ConfigError, match="within 0.5 s \\(timed out\\)"):
        sweep.probe_scheduler("tcp://192.0.2.1:8786", 0.5)
    assert seen == {"address": ("192.0.2.1", 8786), "timeout": 0.5}


def test_a_10000_cell_lookup_is_a_dictionary(tmp_path, monkeypatch):
    levels = ", ".join(f"{0.001 * (i + 1):.4f}" for i in range(100))
    epochs = ", ".join(str(i + 1) for i in range(100))
    path = _write(
        tmp_path, f"[cnn]\nmodel = 'lipnet-1'\nlearning_rate = [{levels}]\nepochs = [{epochs}]\n"
    )
    config = sweep.load_sweep(path)
    assert len(config.cells) == 10_000
    plan = sweep.plan_sweep(config, tmp_path / "out", 2)
    # Every task's cell found without hashing any cell's settings again.
    calls = []
    real = sweep.hashlib.sha256
    monkeypatch.setattr(sweep.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    found = [config.cell(cell_id) for cell_id, _fold in plan.tasks]
    assert calls == [] and len(found) == 20_000
    assert found[-1] is config.cells[-1]


@pytest.mark.parametrize(
    "text, line",
    [
        (
            "[sweep]\nfold_seed = -1\n[cnn]\nmodel = 'lipnet-1'\n",
            "[sweep]: fold_seed must be an integer of at least 0; got -1.",
        ),
        (
            "[cnn]\nmodel = 'lipnet-1'\nepochs = [nan, 3]\n",
            "[cnn]: axis epochs has the level nan; settings are finite numbers.",
        ),
        (
            "[cnn]\nmodel = 'lipnet-1'\nepochs = [3, inf]\n",
            "[cnn]: axis epochs has the level inf; settings are finite numbers.",
        ),
        (
            "[cnn]\nmodel = 'lipnet-1'\nlearning_rate = -inf\n",
            "[cnn]: learning_rate is -inf; settings are finite numbers.",
        ),
    ],
)
def test_cli_refuses_non_finite_levels_and_a_negative_fold_seed(
    tmp_path, tiny_export_copy, text, line
):
    path = _write(tmp_path, text)
    result = CliRunner().invoke(
        cli, ["sweep", str(path), "--data", str(tiny_export_copy), "--dry-run"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: {path}: {line} Give a number, or remove it."
        if "finite" in line
        else f"Error: {path}: {line}"
    ]


def test_cli_refuses_a_bad_sweep_file(tmp_path, tiny_export_copy):
    path = _write(tmp_path, "[cnn]\nmodel = ['lipnet-9']\n")
    result = CliRunner().invoke(
        cli, ["sweep", str(path), "--data", str(tiny_export_copy), "--dry-run"]
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}: [cnn] (model=lipnet-9): Unknown model")


# Real Dask runs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster():
    """2 worker processes, 1 thread each: what CI's 2 cores allow."""
    import logging

    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory, tiny_export):
    """A private copy of the tiny export, its folds and the sweep file."""
    from liposome_bench.dataset import load_dataset
    from liposome_bench.folds import load_or_make_folds

    root = tmp_path_factory.mktemp("sweep")
    data = shutil.copytree(tiny_export, root / "data")
    config = sweep.load_sweep(_write(root, TINY_SWEEP))
    dataset = load_dataset(data)
    folds = load_or_make_folds(dataset, k=2, seed=0)
    return root, config, dataset, folds


@pytest.fixture(scope="module")
def serial_run(sweep_data):
    """The same cells trained one after the other in this process."""
    from liposome_bench.cnn import run_cnn
    from liposome_bench.results import ResultsDir

    root, config, dataset, folds = sweep_data
    return {
        cell.id: run_cnn(
            dataset,
            folds,
            ResultsDir(root / "serial" / cell.id),
            cell.settings,
            seed=0,
            save_models=False,
        )
        for cell in config.cells
    }


def _assert_same_as_serial(out, config, serial):
    for cell in config.cells:
        for reference in serial[cell.id]:
            table = pd.read_csv(
                sweep.cell_dir(out, cell.id) / cell.model / f"fold-{reference.fold}.csv",
                dtype={"id": str},
            )
            assert table["id"].tolist() == reference.ids
            np.testing.assert_array_equal(
                table["predicted"].to_numpy(),
                np.array(list(reference.score_names))[reference.y_pred],
            )
            scores = table[[f"score_{n}" for n in reference.score_names]].to_numpy()
            # Same seeds, so the same network; only the worker's thread count
            # may change float round-off.
            np.testing.assert_allclose(scores, reference.scores, atol=1e-5, rtol=0)


class _Messages:
    def __init__(self):
        self.lines = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def message(self, text):
        self.lines.append(text)


def test_dask_sweep_equals_a_serial_run(dask_cluster, sweep_data, serial_run):
    root, config, dataset, folds = sweep_data
    out = root / "dask"
    messages = _Messages()
    run = sweep.run_sweep(
        config,
        dataset,
        folds,
        out,
        seed=0,
        scheduler=dask_cluster.scheduler_address,
        reporter=messages,
    )
    assert sorted(run.ran) == sorted((c.id, f) for c in config.cells for f in range(2))
    assert run.workers == 2
    assert any(line.startswith("Dask dashboard: ") for line in messages.lines)
    _assert_same_as_serial(out, config, serial_run)

    # A re-run finds every fold finished and starts nothing.
    again = sweep.run_sweep(
        config, dataset, folds, out, seed=0, scheduler="tcp://127.0.0.1:1"
    )  # unreachable: not contacted
    assert again.ran == [] and again.skipped == 4

    # The table, the paired comparisons and the report's figures.
    summary = sweep.summarise_sweep(out, metrics=("f1", "macro_f1"))
    rows = [r for r in summary["table"] if r["metric"] == "f1"]
    assert len(rows) == 2 * 3 and all(r["n_folds"] <= 2 for r in rows)
    assert {r["class"] for r in summary["table"] if r["metric"] == "macro_f1"} == {"overall"}
    pairs = {(c["a"], c["b"], c["axis"], c["where"]) for c in summary["comparisons"]}
    assert pairs == {("lipnet-1", "lipnet-2", "model", "")}
    for c in summary["comparisons"]:
        assert c["n_folds"] <= 2 and c["p_holm"] >= c["p"] or np.isnan(c["p"])
    report = sweep.render_sweep_report(out)
    text = report.read_text()
    assert "Synthetic data" in text and "## Paired comparisons" in text
    figure = out / "report-figures" / "cnn-model.png"
    assert figure.stat().st_size > 1000 and "report-figures/cnn-model.png" in text
    assert (out / "report-figures" / "cells.png").exists() and "report-figures/cells.png" in text
    assert (out / sweep.TABLE_CSV).exists() and (out / sweep.COMPARISONS_CSV).exists()


def _executing(client):
    """(worker address, key) of every sweep task running now."""
    running = client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
    return [
        (addr, key) for addr, keys in running.items() for key in keys if key.startswith("sweep-")
    ]


def test_a_killed_worker_is_replaced_and_results_stay_identical(
    dask_cluster, sweep_data, serial_run
):
    from distributed import Client

    root, config, dataset, folds = sweep_data
    out = root / "killed"
    outcome = {}

    def work():
        try:
            outcome["run"] = sweep.run_sweep(
                config, dataset, folds, out, seed=0, scheduler=dask_cluster.scheduler_address
            )
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    with Client(dask_cluster.scheduler_address) as client:
        pids_before = client.run(os.getpid)
        thread = threading.Thread(target=work)
        thread.start()
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and thread.is_alive() and time.monotonic() < deadline:
            # A task that is still running 0.3 s after it was first seen
            # running: the kill lands inside it (loading data or training).
            running = _executing(client)
            if running:
                time.sleep(0.3)
                still = _executing(client)
                victim = next(((a, k) for a, k in running if (a, k) in still), None)
            else:
                time.sleep(0.05)
        assert victim is not None, "no task was seen running"
        address, key = victim
        cell_id, fold = key[len("sweep-") :].rsplit("-", 1)[0].rsplit("-fold", 1)
        model = config.cell(cell_id).model
        fold_file = sweep.cell_dir(out, cell_id) / model / f"fold-{fold}.json"
        assert not fold_file.exists(), "the task finished before it could be killed"
        os.kill(pids_before[address], signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive(), "the sweep did not finish after the kill"
        pids_after = client.run(os.getpid)
    assert "error" not in outcome, repr(outcome.get("error"))
    assert pids_before[address] not in pids_after.values()
    assert fold_file.exists()
    assert sorted(outcome["run"].ran) == sorted((c.id, f) for c in config.cells for f in range(2))
    _assert_same_as_serial(out, config, serial_run)


def test_a_user_error_in_a_task_is_reported_once_and_not_retried(dask_cluster, sweep_data):
    root, config, dataset, folds = sweep_data
    # The client's dataset differs from the workers' copy: every task fails
    # with the same user error.
    source = sweep.DatasetSource(
        root=str(root / "data"),
        problem="lamellarity",
        builtin=False,
        reader_options={},
        fingerprint="0" * 16,
    )
    messages = _Messages()
    started = time.monotonic()
    with pytest.raises(SweepError) as info:
        sweep.run_sweep(
            config,
            dataset,
            folds,
            root / "failing",
            seed=0,
            source=source,
            scheduler=dask_cluster.scheduler_address,
            reporter=messages,
        )
    message = str(info.value)
    assert message.startswith("4 of 4 tasks failed (first: ")
    assert "A worker read another dataset at" in message and "\n" not in message
    reported = [line for line in messages.lines if "read another dataset" in line]
    assert len(reported) == 1
    assert time.monotonic() - started < 60


def test_a_worker_without_the_shared_folder_sends_the_fold_back(tmp_path, sweep_data):
    """The SVM as a task, on a worker that cannot write into the sweep folder:
    the fold comes back in the outcome and the client writes it."""
    from liposome_bench.results import ResultsDir
    from liposome_bench.settings import SVMSettings

    root, _config, dataset, folds = sweep_data
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = SVMSettings(C=1.0, gamma=0.1)
    cell = sweep.Cell("svm", settings)
    outcome = sweep.run_task(
        dataset, "svm", settings.to_dict(), cell.id, 1, folds, str(blocker / "out"), 0, False, 1
    )
    assert outcome.error is None and not outcome.wrote
    assert outcome.result.fold == 1 and outcome.record["C"] == 1.0
    out = tmp_path / "sweep"
    assert sweep.save_outcome(out, dataset, folds, outcome)
    saved = ResultsDir(sweep.cell_dir(out, cell.id)).load_fold("svm", 1, dataset.problem.classes)
    np.testing.assert_array_equal(saved.y_pred, outcome.result.y_pred)
    assert not sweep.save_outcome(out, dataset, folds, outcome)  # already there: kept


@pytest.mark.parametrize("visible, ids", [("2,3", ["2", "3"]), ("-1", []), ("", []), ("0", ["0"])])
def test_local_cluster_has_one_worker_per_visible_gpu(monkeypatch, visible, ids):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert sweep.gpu_ids() == ids
    shape = sweep.local_cluster_shape()
    if ids:
        assert shape["n_workers"] == len(ids) and shape["gpus"] == len(ids)
    else:
        assert shape["gpus"] == 0
        assert shape["n_workers"] == max(1, shape["cores"] // sweep.CORES_PER_CPU_WORKER)

"""A real multi-process Dask cluster (issue 24): a ``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1, started here as separate programs.
A reduced ``sweep`` and a reduced ``curve`` run through ``--scheduler
tcp://127.0.0.1:PORT`` (the CLI, in its own process), one worker process is
killed in the middle of a curve task, and every fold must equal a local
(serial, in-process) run of the same tasks. ``benchmark --repeats 2
--scheduler tcp://...`` must give the serial run's summary and resume a
deleted fold on the cluster. Not skipped: CI runs it (marker ``cluster``);
the processes are always stopped.

Also: the SLURM configuration example of docs/curve.md builds a
``dask_jobqueue.SLURMCluster`` without submitting a job."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ENGINE_CNN, ENGINE_FOLDS, ENGINE_SVM

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.cluster

TINY_SWEEP = """
[sweep]
folds = 2

[cnn]
epochs = 1
input_size = 16
augment = "none"
model = ["lipnet-1"]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="2",
        OMP_NUM_THREADS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        MPLBACKEND="Agg",
    )
    return env


def _stop(process) -> None:
    """Stop a process group started here: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    """``dask scheduler`` + 2 ``dask worker --nworkers 1 --nthreads 1``, each
    in its own process group; yields the scheduler address."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("cluster-logs")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _env()
    processes = []
    with contextlib.ExitStack() as files:
        try:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "dask",
                        "scheduler",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--no-dashboard",
                    ],
                    env=env,
                    start_new_session=True,
                    stdout=files.enter_context(open(logs / "scheduler.log", "w")),
                    stderr=subprocess.STDOUT,
                )
            )
            for i in range(2):
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "dask",
                            "worker",
                            address,
                            "--nworkers",
                            "1",
                            "--nthreads",
                            "1",
                            "--no-dashboard",
                            "--name",
                            f"w{i}",
                            "--host",
                            "127.0.0.1",
                        ],
                        env=env,
                        start_new_session=True,
                        stdout=files.enter_context(open(logs / f"worker-{i}.log", "w")),
                        stderr=subprocess.STDOUT,
                    )
                )
            with Client(address, timeout="30s") as client:
                client.wait_for_workers(2, timeout=60)
            yield address
        finally:
            for process in reversed(processes):
                _stop(process)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_export):
    root = tmp_path_factory.mktemp("cluster")
    return root, shutil.copytree(tiny_export, root / "data")


def _cli(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "liposome_bench", *map(str, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def _executing(client, prefix):
    running = client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
    return [(a, k) for a, keys in running.items() for k in keys if k.startswith(prefix)]


def _assert_fold_equal(path, reference, classes):
    table = pd.read_csv(path, dtype={"id": str})
    assert table["id"].tolist() == reference.ids
    np.testing.assert_array_equal(
        table["predicted"].to_numpy(), np.array(list(classes))[reference.y_pred]
    )
    scores = table[[f"score_{n}" for n in reference.score_names]].to_numpy()
    # Same seeds, the same network; only thread counts change round-off.
    np.testing.assert_allclose(scores, reference.scores, atol=1e-5, rtol=0)


def test_sweep_and_curve_on_a_real_cluster_survive_a_killed_worker(real_cluster, data):
    from distributed import Client

    from liposome_bench import curve, sweep
    from liposome_bench.cnn import run_cnn
    from liposome_bench.dataset import load_dataset
    from liposome_bench.folds import load_or_make_folds
    from liposome_bench.results import ResultsDir
    from liposome_bench.svm import run_svm

    root, export = data

    # A reduced sweep through --scheduler.
    config_path = root / "grid.toml"
    config_path.write_text(TINY_SWEEP, encoding="utf-8")
    result = _cli(
        "sweep", config_path, "--data", export, "--out", root / "sweep", "--scheduler", real_cluster
    )
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert f"Dask scheduler {real_cluster}: 2 worker(s) now." in said
    config = sweep.load_sweep(config_path)
    dataset = load_dataset(export)
    folds2 = load_or_make_folds(dataset, k=2, seed=0)
    (cell,) = config.cells
    classes = list(dataset.problem.classes)
    for reference in run_cnn(
        dataset, folds2, ResultsDir(root / "ref-sweep"), cell.settings, seed=0, save_models=False
    ):
        _assert_fold_equal(
            sweep.cell_dir(root / "sweep", cell.id) / cell.model / f"fold-{reference.fold}.csv",
            reference,
            classes,
        )

    # A reduced curve through --scheduler; one worker process dies mid-task.
    out = root / "curve"
    args = [
        "curve",
        "--data",
        export,
        "--cnn",
        "lipnet-1",
        "--epochs",
        "1",
        "--fractions",
        "0.5,1",
        "--folds",
        "3",
        "--out",
        out,
        "--scheduler",
        real_cluster,
    ]
    with Client(real_cluster) as client:
        pids = client.run(os.getpid)
        process = subprocess.Popen(
            [sys.executable, "-m", "liposome_bench", *map(str, args)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            victim = None
            deadline = time.monotonic() + 90
            while victim is None and process.poll() is None and time.monotonic() < deadline:
                running = _executing(client, "curve-lipnet")
                if running:
                    time.sleep(0.3)
                    still = _executing(client, "curve-lipnet")
                    victim = next(((a, k) for a, k in running if (a, k) in still), None)
                else:
                    time.sleep(0.05)
            assert victim is not None, "no curve task was seen running"
            address, key = victim
            task_id, fold = re.fullmatch(r"curve-(.+)-fold(\d+)-[0-9a-f]{8}", key).groups()
            fold_file = sweep.cell_dir(out, task_id) / "lipnet-1" / f"fold-{fold}.json"
            assert not fold_file.exists(), "the task finished before it could be killed"
            os.kill(pids[address], signal.SIGKILL)
            output, _ = process.communicate(timeout=180)
        finally:
            _stop(process)
        after = client.run(os.getpid)
    assert process.returncode == 0, output
    assert pids[address] not in after.values()
    assert fold_file.exists()

    # Every fold equals a local, serial run of the same subsamples.
    plan = curve.plan_curve(
        load_or_make_folds(dataset, k=3, seed=0),
        dataset.y,
        list(dataset.problem.classes),
        root / "ref-curve",
        json_cells(out),
        curve.parse_points("0.5,1"),
    )
    for point in plan.points:
        sub = plan.subsamples[(point.label, 0)]
        for c in plan.cells:
            task_id = curve.task_cell_id(c, point, 0)
            target = ResultsDir(root / "ref-curve" / task_id)
            references = (
                run_cnn(dataset, sub, target, c.settings, seed=0, save_models=False)
                if c.kind == "cnn"
                else run_svm(dataset, sub, target, c.settings, jobs=1, seed=0)
            )
            for reference in references:
                _assert_fold_equal(
                    sweep.cell_dir(out, task_id) / c.model / f"fold-{reference.fold}.csv",
                    reference,
                    classes,
                )


def json_cells(out):
    """The curve's models as recorded in its curve.json."""
    from liposome_bench import curve, sweep
    from liposome_bench.settings import CNNSettings, SVMSettings

    record = json.loads((Path(out) / curve.CURVE_JSON).read_text())
    return [
        sweep.Cell(
            info["kind"],
            (CNNSettings if info["kind"] == "cnn" else SVMSettings).from_mapping(info["settings"]),
        )
        for info in record["cells"].values()
    ]


SLURM_EXAMPLE = ROOT / "docs" / "curve.md"


def test_the_slurm_example_builds_a_cluster_without_submitting(monkeypatch):
    """The ```python block under "SLURM" in docs/curve.md, run as written:
    it must build a SLURMCluster whose job script asks for what it says.
    No job is submitted (no sbatch is called; scale is never called)."""
    import dask_jobqueue

    text = SLURM_EXAMPLE.read_text(encoding="utf-8")
    block = re.search(r"<!-- slurm-example -->\n```python\n(.*?)```", text, re.DOTALL)
    assert block, "docs/curve.md lost its SLURM example"
    calls = []
    monkeypatch.setattr(
        subprocess, "Popen", lambda *a, **k: calls.append(a) or pytest.fail("submitted a job")
    )
    namespace = {}
    # The documented example, run as written: that is the test.
    exec(compile(block.group(1), "docs/curve.md", "exec"), namespace)  # noqa: S102
    cluster = namespace["cluster"]
    try:
        assert isinstance(cluster, dask_jobqueue.SLURMCluster)
        script = cluster.job_script()
        assert "#SBATCH -p cpu" in script and "#SBATCH --cpus-per-task=4" in script
        assert "--nthreads 1" in script or "--nthreads=1" in script
        assert cluster.scheduler_address.startswith("tcp://")
    finally:
        cluster.close()
    assert calls == []


def _toml_table(name: str, values: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


#: The settings of the session's serial reference (conftest.serial_repeats_run).
TINY_BENCHMARK = _toml_table("svm", ENGINE_SVM) + _toml_table("cnn", ENGINE_CNN)


def test_benchmark_on_a_real_cluster_equals_the_serial_run(
    real_cluster, data, tmp_path, serial_repeats_run
):
    """``benchmark --repeats 2 --scheduler tcp://...`` through the CLI (its own
    process) on the real cluster: the same summary and predictions as the
    serial, in-process run of the same settings (the session's
    ``serial_repeats_run``, which test_comparison.py shares); a deleted fold
    is run again on the cluster and the summary stays the same."""
    from test_comparison import assert_same_benchmark

    _root, export = data
    serial = serial_repeats_run["out"]
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_BENCHMARK, encoding="utf-8")
    args = ["benchmark", "--data", export, "--cnn", "lipnet-1", "--config", config]
    args += ["--folds", str(ENGINE_FOLDS), "--repeats", "2"]
    out = tmp_path / "cluster"
    remote = _cli(*args, "--out", out, "--scheduler", real_cluster)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    said = " ".join((remote.stdout + remote.stderr).split())
    assert f"Dask scheduler {real_cluster}: 2 worker(s) now." in said
    workers = set(re.findall(r"done on worker (w\d)", said))
    assert len(re.findall(r"done on worker w\d", said)) == 2 * ENGINE_FOLDS * 2
    assert workers == {"w0", "w1"}, "both worker processes ran tasks"
    assert_same_benchmark(serial, out)

    # Resume: only the missing fold runs, on the cluster.
    for suffix in (".json", ".csv"):
        (out / "repeat-1" / "svm" / f"fold-1{suffix}").unlink()
    again = _cli(*args, "--out", out, "--scheduler", real_cluster)
    assert again.returncode == 0, again.stdout + again.stderr
    said = " ".join((again.stdout + again.stderr).split())
    assert "7 of 8 (repeat, fold, model) tasks already finished; running 1." in said
    assert "repeat-1: svm fold 1 done on worker" in said
    assert_same_benchmark(serial, out)

"""The Dask engine that ``sweep``, ``curve`` and ``benchmark`` run their
tasks on (docs/sweep.md).

A task is one fold of one model (:func:`run_fold_task`): it trains and tests
through its family's ``registry.ModelSpec.run_cv`` with ``only_folds=[fold]``
(the engine branches on no family, and loads none until a task runs), so it
gets the seed a serial run gives that fold and its results equal a serial
run's. :func:`connect` yields a ``distributed.Client`` on a local cluster
sized to the machine (:func:`local_cluster_shape`) or on a running scheduler
(``tcp://HOST:PORT``, checked by :func:`parse_scheduler` and
:func:`probe_scheduler` before anything is written). Workers read the
dataset from its folder (:class:`DatasetSource`, once per worker process) or
get it from the client; values shared by many tasks (folds, the dataset in
memory, features, prepared images) go to the cluster once, as tasks of their
own (:func:`share`), so the scheduler can make them again if the workers
holding them die.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from liposome_bench import registry
from liposome_bench.errors import ConfigError, LiposomeBenchError
from liposome_bench.machine import usable_cores

#: How many times Dask re-runs a task that raised an unexpected exception
#: (a user error is never re-run); a task whose worker died is re-run by the
#: scheduler (distributed.scheduler.allowed-failures, default 3).
TASK_RETRIES = 2
#: CPU cores given to each worker of the default local cluster on a machine
#: without a GPU: a small LipNet does not use more than a few cores well.
CORES_PER_CPU_WORKER = 4


@dataclass(frozen=True)
class DatasetSource:
    """How a worker gets the dataset: read ``root`` (a shared or copied
    path) or, for the built-in data, generate it into its own cache."""

    root: str | None
    problem: str | None
    builtin: bool
    reader_options: dict
    fingerprint: str


@dataclass
class TaskOutcome:
    """What a (cell, fold) task sends back to the client."""

    cell: str
    fold: int
    result: object = None  # results.FoldResult
    record: dict | None = None  # the cell's settings as run.json records them
    error: str | None = None  # a LiposomeBenchError's one-line message
    worker: str = ""
    seconds: float = 0.0
    wrote: bool = False  # the worker wrote the fold into the sweep folder


_DATASETS: dict = {}  # per worker process: fingerprint -> Dataset


def load_task_dataset(source: DatasetSource):
    """The dataset on a worker (read once per worker process).

    Raises
    ------
    DatasetError
        If the worker cannot read it, or reads a dataset with another
        fingerprint.
    """
    from liposome_bench.dataset import load_dataset
    from liposome_bench.sources import resolve_dataset
    from liposome_bench.errors import DatasetError

    if source.fingerprint in _DATASETS:
        return _DATASETS[source.fingerprint]
    if source.root and Path(source.root).exists():
        dataset = load_dataset(source.root, source.problem, **source.reader_options)
    elif source.builtin:
        dataset = resolve_dataset(None, source.problem)
    else:
        raise DatasetError(
            f"A worker cannot read the dataset at {source.root}. Give every worker the "
            "dataset at the same path (a shared or copied folder)."
        )
    if dataset.fingerprint() != source.fingerprint:
        raise DatasetError(
            f"A worker read another dataset at {source.root} (fingerprint "
            f"{dataset.fingerprint()}, the client's {source.fingerprint}). Give every "
            "worker the same copy."
        )
    _DATASETS.clear()  # one dataset per worker process at a time
    _DATASETS[source.fingerprint] = dataset
    return dataset


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


def task_settings(spec, settings):
    """``settings`` as its family's settings object: a mapping (as
    ``run.json`` and the sweep record them) goes through the settings
    class's ``from_mapping``."""
    if isinstance(settings, spec.settings_class):
        return settings
    return spec.settings_class.from_mapping(settings)


def run_fold_task(
    source,
    model: str,
    settings,
    target: str,
    fold: int,
    folds,
    seed: int,
    save_models: bool,
    jobs: int,
    inputs=None,
    label: str = "",
) -> TaskOutcome:
    """Run one fold of one model on a worker and write it into the results
    folder ``target`` when the worker can; the outcome also carries the fold
    back to the client (:func:`save_outcome`).

    ``model`` is a model name or a family (``registry.get``), and
    ``settings`` its family's settings (or their mapping); the fold runs
    through the family's ``registry.ModelSpec.run_cv`` with
    ``only_folds=[fold]``. ``inputs`` are the model's prepared inputs, made
    once for every task (:func:`inputs_task`); None computes them here.
    ``label`` names the task in the outcome.

    A :class:`LiposomeBenchError` is returned as ``error`` (a user mistake:
    retrying cannot help); any other exception propagates, and Dask retries.
    """
    from liposome_bench.results import ResultsDir

    started = time.perf_counter()
    outcome = TaskOutcome(cell=label, fold=fold, worker=_worker_name())
    try:
        spec = registry.get(model)
        settings = task_settings(spec, settings)
        dataset = source if not isinstance(source, DatasetSource) else load_task_dataset(source)
        folder = Path(target)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
            outcome.wrote = True
        except OSError:  # no shared file system: the client writes the fold
            folder = Path(tempfile.mkdtemp(prefix="liposome-task-")) / (label or "results")
        results = ResultsDir(folder)
        (result,) = spec.run_cv(
            dataset,
            folds,
            results,
            settings,
            name=model if model in spec.names else spec.model_of(settings),
            seed=seed,
            jobs=jobs,
            reporter=None,
            inputs=inputs,
            save_models=save_models,
            only_folds=[fold],
        )
        outcome.result = result
        outcome.record = results.read_run()["models"][result.model]
    except LiposomeBenchError as exc:
        outcome.error = str(exc)
    outcome.seconds = time.perf_counter() - started
    return outcome


def inputs_task(source, model: str, settings, jobs: int = 1):
    """A model's prepared inputs (``registry.ModelSpec.prepare_inputs``: the
    SVM's feature table, a CNN's network inputs) of the dataset, computed
    once on a worker and shared by every task of that model; None for a
    family that prepares none."""
    spec = registry.get(model)
    if spec.prepare_inputs is None:
        return None
    dataset = source if not isinstance(source, DatasetSource) else load_task_dataset(source)
    return spec.prepare_inputs(dataset, task_settings(spec, settings), jobs=jobs, reporter=None)


def save_outcome(target, dataset, folds, outcome: TaskOutcome) -> bool:
    """Write a task's fold into the results folder ``target`` unless its
    worker already did (workers without the client's file system send it
    back instead). Returns whether it was written here."""
    from liposome_bench.results import ResultsDir

    results = ResultsDir(target)
    model = outcome.result.model
    if results.fold_json(model, outcome.fold).exists():
        return False
    results.prepare(dataset, folds, model, outcome.record)
    results.save_fold(outcome.result, list(dataset.problem.classes))
    return True


# Running ------------------------------------------------------------------------------


def gpu_ids() -> list[str]:
    """This machine's GPUs: the ids in CUDA_VISIBLE_DEVICES when it is set,
    else one per GPU that ``nvidia-smi -L`` lists (none without it).
    Nothing heavy is imported."""
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [
        str(i)
        for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))
    ]


def count_gpus() -> int:
    """How many GPUs :func:`gpu_ids` finds."""
    return len(gpu_ids())


def local_cluster_shape(n_workers: int | None = None) -> dict:
    """Workers and threads of the default local cluster: one worker per GPU
    when there are GPUs, else one per :data:`CORES_PER_CPU_WORKER` cores;
    each runs one task at a time with its share of the cores."""
    cores = usable_cores()
    gpus = count_gpus()
    if n_workers is None:
        n_workers = gpus if gpus else max(1, cores // CORES_PER_CPU_WORKER)
    return {
        "n_workers": int(n_workers),
        "gpus": gpus,
        "threads": max(1, cores // max(1, int(n_workers))),
        "cores": cores,
    }


def start_local_cluster(n_workers: int | None = None, dashboard_address=":8787"):
    """A ``distributed.LocalCluster`` shaped by :func:`local_cluster_shape`;
    with GPUs, worker ``i`` sees only the ``i``-th of :func:`gpu_ids`
    (CUDA_VISIBLE_DEVICES)."""
    import logging

    import dask
    from distributed import LocalCluster

    shape = local_cluster_shape(n_workers)
    gpus = gpu_ids()
    # Dask's INFO lines (workers starting and closing) only with --verbose.
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    threads = str(shape["threads"])
    # Each worker gets its share of the cores, so workers do not oversubscribe
    # them. (TensorFlow's thread counts change a CNN's float round-off, ~1e-7
    # in probabilities, not its predictions.)
    env = {
        "OMP_NUM_THREADS": threads,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    # Workers must be able to start processes of their own (joblib's loky in
    # the SVM's grid search), so they are not daemons.
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(
            n_workers=0 if shape["gpus"] else shape["n_workers"],
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard_address,
            env=env,
            silence_logs=logging.ERROR if quiet else False,
        )
        if shape["gpus"]:
            for i in range(shape["n_workers"]):
                device = gpus[i % len(gpus)]
                spec = {
                    "cls": cluster.new_spec["cls"],
                    "options": {
                        **cluster.new_spec["options"],
                        "env": {**env, "CUDA_VISIBLE_DEVICES": device},
                        "name": f"gpu-{device}",
                    },
                }
                cluster.worker_spec[f"gpu-{device}-{i}"] = spec
            cluster.scale(shape["n_workers"])
    return cluster, shape


def quiet_dask_logs(func):
    """Dask's INFO and WARNING lines (workers starting, closing, restarting)
    only when the root logger shows DEBUG (``liposome-bench -v``)."""
    import functools
    import logging

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import distributed  # noqa: F401  (configures its loggers on import)

        if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            return func(*args, **kwargs)
        names = ["distributed"] + [
            n for n in logging.root.manager.loggerDict if n.startswith("distributed.")
        ]
        loggers = [logging.getLogger(n) for n in names]
        old = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            return func(*args, **kwargs)
        finally:
            for lg, level in zip(loggers, old):
                lg.setLevel(level)

    return wrapper


#: The --scheduler forms the sweep accepts (docs/sweep.md): Dask's tls://
#: needs certificates and ucx:// a UCX build, neither of which the sweep sets up.
SCHEDULER_FORMS = "'local' or tcp://HOST:PORT with PORT in 1-65535 (e.g. tcp://10.0.0.5:8786)"
#: Seconds to try to reach a scheduler (``--connect-timeout``).
CONNECT_TIMEOUT_S = 10.0


def check_scheduler(scheduler, also: tuple = ()) -> str:
    """``scheduler`` if it is ``"local"``, one of the words ``also`` (the
    command's own modes) or a ``tcp://HOST:PORT`` address (IPv6 hosts in
    brackets), checked without connecting.

    Raises
    ------
    ConfigError
        Otherwise: one line naming the accepted forms.
    """
    parse_scheduler(scheduler, also)
    return scheduler


def parse_scheduler(scheduler, also: tuple = ()) -> tuple[str, int] | None:
    """None for ``"local"`` (and the words ``also``), else the (host, port)
    of a ``tcp://HOST:PORT`` address.

    Raises
    ------
    ConfigError
        If ``scheduler`` is neither (another protocol, no port, a port that
        is not a number in 1-65535, no host).
    """
    if scheduler == "local" or scheduler in also:
        return None
    text = scheduler if isinstance(scheduler, str) else repr(scheduler)
    forms = "".join(f"{word!r}, " for word in also) + SCHEDULER_FORMS

    def bad(why):
        return ConfigError(f"--scheduler {text!r}: {why}; expected {forms}.")

    if not isinstance(scheduler, str):
        raise bad("not an address")
    protocol, sep, rest = scheduler.partition("://")
    if not sep:
        raise bad("no protocol")
    if protocol != "tcp":
        raise bad(f"protocol {protocol}:// is not supported")
    if rest.startswith("["):
        host, close, tail = rest[1:].partition("]")
        if not close or not tail.startswith(":"):
            raise bad("an IPv6 host needs [HOST]:PORT")
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon:
            raise bad("no port")
    if not host or any(c in host for c in "/?#@ "):
        raise bad("no host")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise bad(f"port {port_text!r} is not a number in 1-65535")
    return host, int(port_text)


def probe_scheduler(scheduler, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to the scheduler within
    ``timeout_s`` seconds; nothing for ``"local"``.

    Raises
    ------
    ConfigError
        If the address is not accepted, or nothing answers there in time.
    """
    import socket

    if not (
        isinstance(timeout_s, (int, float))
        and not isinstance(timeout_s, bool)
        and math.isfinite(timeout_s)
        and timeout_s > 0
    ):
        raise ConfigError(
            f"--connect-timeout must be a positive number of seconds; got {timeout_s!r}."
        )
    address = parse_scheduler(scheduler) if scheduler != "local" else None
    if address is None:
        return
    try:
        with socket.create_connection(address, timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot reach the Dask scheduler at {scheduler} within {timeout_s:g} s "
            f"({getattr(exc, 'strerror', None) or exc}); nothing was written. Start it "
            "(`dask scheduler`), check the address, or use --scheduler local."
        ) from None


def _identity(value):
    return value


def share(client, value, key: str | None = None):
    """``value`` on the cluster once, as a task (not scattered data): if
    every worker holding it dies, the scheduler makes it again."""
    return client.submit(_identity, value, key=key, pure=False)


def dataset_argument(client, dataset, source: DatasetSource | None, fingerprint: str):
    """What tasks get for the dataset: ``source`` if given, else a
    :class:`DatasetSource` for its folder, else (a dataset in memory only)
    the dataset itself, shared once (:func:`share`)."""
    if source is not None:
        return source
    if dataset.root is not None:
        return DatasetSource(
            root=str(dataset.root),
            problem=dataset.problem.name if dataset.problem.codes is not None else None,
            builtin=False,
            reader_options={},
            fingerprint=fingerprint,
        )
    return share(client, dataset)


def dashboard_link(client) -> str:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return "not available (pip install bokeh to watch the tasks)"
    return client.dashboard_link


@dataclass
class Connection:
    """A client of :func:`connect` and what it found."""

    client: object  # distributed.Client
    shape: dict | None  # local_cluster_shape of a local cluster, else None
    workers: int

    def jobs(self, jobs: int = -1) -> int:
        """SVM workers of one task: ``jobs``, with -1 meaning the cores of a
        local worker (every core of a remote one)."""
        if jobs != -1 or self.shape is None:
            return jobs
        return max(1, self.shape["threads"])


@contextlib.contextmanager
def connect(
    scheduler: str,
    *,
    n_workers: int | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    dashboard: bool = False,
    reporter=None,
):
    """A :class:`Connection` to a new local cluster (``"local"``) or to the
    scheduler at ``scheduler``; client and cluster are closed on leaving,
    on Ctrl-C and SIGTERM too (the scheduler then drops the tasks).

    Raises
    ------
    ConfigError
        If the scheduler cannot be reached.
    """
    from distributed import Client

    from liposome_bench.progress import NullReporter

    reporter = reporter or NullReporter()
    cluster = shape = client = None
    try:
        if scheduler == "local":
            cluster, shape = start_local_cluster(
                n_workers, dashboard_address=":8787" if dashboard else None
            )
            address = cluster
            reporter.message(
                f"Local Dask cluster: {shape['n_workers']} worker(s) x {shape['threads']} "
                f"core(s)" + (", one GPU each" if shape["gpus"] else ", no GPU") + "."
            )
        else:
            address = check_scheduler(scheduler)
        try:
            client = Client(address, timeout=f"{connect_timeout}s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"Cannot reach the Dask scheduler at {scheduler} ({exc}). "
                "Start it (`dask scheduler`) or use --scheduler local."
            ) from None
        if dashboard:
            reporter.message(f"Dask dashboard: {dashboard_link(client)}")
        workers = len(client.scheduler_info().get("workers", {}))
        if cluster is None:
            reporter.message(
                f"Dask scheduler {scheduler}: {workers} worker(s) now"
                + ("; the tasks wait until workers join." if not workers else ".")
            )
        yield Connection(client=client, shape=shape, workers=workers)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

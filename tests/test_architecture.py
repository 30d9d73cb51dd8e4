"""The package's structure (issue 14): no import cycle between its modules,
no environment changes on import, and docs/architecture.md names real code."""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "liposome_bench"


def module_name(path: Path) -> str:
    """A package file's module name, dotted and relative to the package:
    ``svm`` (svm.py), ``cnn.train`` (cnn/train.py), ``data.formats`` (its
    ``__init__.py``), ``cnn`` (cnn/__init__.py);
    the package's own ``__init__.py`` is ``__init__``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if len(parts) > 1 and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Module name (:func:`module_name`) -> file, for every file of the
    package and its subpackages."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node, modules) -> set[str]:
    """The package modules (names in ``modules``) an import statement loads:
    ``from liposome_bench.cnn import train_fold`` loads ``cnn``,
    ``from liposome_bench.cnn import train`` the submodule ``cnn.train``,
    ``import liposome_bench.cnn.train`` ``cnn.train``."""

    def owner(dotted):  # the longest prefix of ``dotted`` that is a module
        parts = dotted.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return {".".join(parts)} if parts else set()

    prefix = "liposome_bench."
    if isinstance(node, ast.Import):
        names = [a.name.removeprefix(prefix) for a in node.names if a.name.startswith(prefix)]
        return set().union(*map(owner, names))
    if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
        return set()
    if node.module == "liposome_bench":
        return {a.name for a in node.names if a.name in modules}
    if not node.module.startswith(prefix):
        return set()
    base = node.module.removeprefix(prefix)
    found = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found |= {submodule} if submodule in modules else owner(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or inside
    functions alike (dotted names, :func:`module_name`)."""
    files = package_modules()
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            deps |= imported_modules(node, files)
        graph[name] = deps - {name}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return trail[trail.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep, trail + [dep])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"dataset", "synth", "data.kernel", "data.formats.manifest"} <= set(graph)
    assert "data.formats.manifest" in graph["data.readers"]
    assert {"cnn.preprocess", "cnn.train"} <= graph["cnn.runner"]
    assert "cnn" in graph["lipnet"] and "cnn.runner" in graph["cnn"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from liposome_bench.cnn import train_fold", {"cnn"}),
        ("from liposome_bench.cnn import train, runner", {"cnn.train", "cnn.runner"}),
        ("from liposome_bench.cnn.train import train_fold", {"cnn.train"}),
        ("from liposome_bench import cnn, svm", {"cnn", "svm"}),
        ("import liposome_bench.cnn.train", {"cnn.train"}),
        ("import liposome_bench.svm.nothing", {"svm"}),
        ("from numpy import cnn", set()),
    ],
)
def test_imported_modules_names_submodules(source, expected):
    modules = {"cnn", "cnn.train", "cnn.runner", "svm"}
    assert imported_modules(ast.parse(source).body[0], modules) == expected


def test_module_name_is_dotted_inside_the_package():
    assert module_name(PACKAGE / "dataset.py") == "dataset"
    assert module_name(PACKAGE / "data" / "formats" / "manifest.py") == "data.formats.manifest"
    assert module_name(PACKAGE / "data" / "__init__.py") == "data"
    assert module_name(PACKAGE / "__init__.py") == "__init__"


#: The orchestration every entry point prepares its run with (issue 21), and
#: the data and ground layers it may use: no model family, no other entry point.
PREPARE_MAY_USE = {"dataset", "folds", "outputs", "results", "sources", "errors", "progress"}


def test_one_orchestration_sits_below_the_entry_points():
    graph = import_graph()
    assert graph["prepare"] <= PREPARE_MAY_USE, sorted(graph["prepare"] - PREPARE_MAY_USE)
    users = {module for module, deps in graph.items() if "prepare" in deps}
    assert {"cli", "comparison", "deploy"} <= users


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: The ground every layer stands on (docs/architecture.md).
GROUND = {"errors", "io", "progress", "settings", "stats", "metrics"}


def test_the_data_layer_stands_on_the_ground_only():
    """Issue 21: ``liposome_bench.data`` (types, images, the reader kernel,
    the formats, checks) imports only its own modules and the ground, and
    ``dataset`` only re-exports it; nothing above the data layer leaks in."""
    graph = import_graph()
    data = {name for name in graph if name == "data" or name.startswith("data.")}
    assert {"data.types", "data.images", "data.kernel", "data.readers"} <= data
    above = {
        f"{name} imports {dep}"
        for name in data
        for dep in graph[name]
        if dep not in data and dep not in GROUND
    }
    assert sorted(above) == []
    assert graph["dataset"] <= data, sorted(graph["dataset"] - data)


def test_importing_modules_leaves_the_environment_alone():
    names = sorted(set(package_modules()) - {"__main__", "__init__"})
    # scikit-learn sets KMP_* variables when imported: imported first, its
    # changes are not counted as ours.
    code = (
        "import os, importlib, sklearn; os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None); "
        "before = dict(os.environ); "
        f"[importlib.import_module('liposome_bench.' + m) for m in {names!r}]; "
        "print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert out == "[]"


def test_architecture_doc_names_real_modules_and_functions():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| `") and not line.startswith("| `module")
    ]
    documented = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        module = cells[0].strip("`")
        documented.add(module)
        mod = importlib.import_module(f"liposome_bench.{module}")
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:[(.`])", cells[1]):
            assert hasattr(mod, name), f"docs/architecture.md: {module}.{name} does not exist"
    on_disk = set(package_modules()) - {"__init__", "__main__"}
    assert on_disk <= documented, (
        f"modules missing from docs/architecture.md: {sorted(on_disk - documented)}"
    )


def test_matplotlib_is_used_by_the_plotting_module_only():
    users = sorted(
        name
        for name, p in package_modules().items()
        if name != "plotting" and "matplotlib" in p.read_text(encoding="utf-8")
    )
    assert users == []


def test_rich_tables_are_built_by_the_display_module_only():
    users = sorted(
        name
        for name, p in package_modules().items()
        if name != "display" and "rich.table" in p.read_text(encoding="utf-8")
    )
    assert users == []


def test_the_fuzz_module_runs_in_the_test_command():
    """Issue 26: CI runs README's test command (.ci/run); neither it nor
    pytest's configuration may deselect the fuzz marker."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    assert "fuzz:" in config.get("tool:pytest", "markers")
    addopts = config.get("tool:pytest", "addopts", fallback="")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    test_command = readme.split("```")[1].strip().splitlines()[-1]
    pytest_options = test_command.split("pytest", 1)[1]
    for text in (addopts, pytest_options):
        assert "fuzz" not in text and "-m " not in text, text
    assert "pytestmark = pytest.mark.fuzz" in (ROOT / "tests" / "test_fuzz.py").read_text()


def private_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) for each private name of another package module that
    ``tree`` imports (``from liposome_bench.x import _y``, ``from .x import
    _y``) or reaches as an attribute (``x._y`` where ``x`` names a package
    module, a subpackage's module or a name imported from one)."""
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").split(".")[0] == "liposome_bench"
            if not ours:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                else:  # a module (``from liposome_bench.cnn import train``) or a name
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("liposome_bench.") and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_no_module_uses_another_modules_private_names():
    """Issue 21: a helper shared between modules is public (named without
    ``_`` and documented) in the module that owns it."""
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, text in private_uses(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offences == [], "\n".join(offences)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from liposome_bench.cnn import _window", ["from liposome_bench.cnn import _window"]),
        ("from .sweep import level_text, _x", ["from sweep import _x"]),
        ("from liposome_bench import sweep as s\ns._level_text(1)", ["s._level_text"]),
        ("import liposome_bench.dataset as ds\nds._read_csv", ["ds._read_csv"]),
        ("from liposome_bench.cnn import window\nfrom numpy import _x", []),
        ("from liposome_bench import dataset\ndataset.__name__", []),
        ("from liposome_bench.cnn import train\ntrain._seed(1)", ["train._seed"]),
    ],
)
def test_private_uses_finds_each_kind(source, expected):
    assert [text for _, text in private_uses(ast.parse(source))] == expected


#: Package modules that may still import other package modules inside
#: functions, with the reason. Everything else imports them at the top, so a
#: file's header shows what it uses (issue 21). TensorFlow/Keras, Dask,
#: matplotlib and the optional extras stay lazy everywhere; this list is only
#: about liposome_bench's own modules.
LAZY_PACKAGE_IMPORTS = {
    "cli": "--help and quick commands start without loading the library",
    # Measured (issue 21): importing at the top made `import liposome_bench.api`
    # 0.02 s -> 2 s and engine 0.06 s -> 3 s (scikit-learn, SciPy), sources
    # 0.3 s -> 0.6 s (SciPy through synth).
    "api": "`liposome_bench.benchmark` and friends load on first use",
    "engine": "the scheduler side loads no model family",
    "sources": "a dataset on disk needs no synth (SciPy)",
    # cli imports the registry for its choice lists; the families' runners
    # (svm -> scikit-learn, about 1 s) load when a model runs.
    "registry": "--help reads the model names without loading scikit-learn",
}


def lazy_package_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) for each import of a package module inside a function."""
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom) and (
                node.level > 0 or (node.module or "").split(".")[0] == "liposome_bench"
            ):
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif isinstance(node, ast.Import):
                found += [
                    (node.lineno, a.name)
                    for a in node.names
                    if a.name.split(".")[0] == "liposome_bench"
                ]
    return found


def test_package_modules_import_each_other_at_module_level():
    files = package_modules()
    found = {
        name: lazy_package_imports(ast.parse(path.read_text(encoding="utf-8")))
        for name, path in files.items()
    }
    offences = [
        f"{files[name].relative_to(ROOT)}:{line}: imports {module} inside a function"
        for name, uses in found.items()
        if name not in LAZY_PACKAGE_IMPORTS
        for line, module in uses
    ]
    assert offences == [], "\n".join(offences)
    stale = sorted(stem for stem in LAZY_PACKAGE_IMPORTS if not found.get(stem))
    assert stale == [], f"allowed lazy imports no longer needed: {stale}"


def test_lazy_package_imports_finds_function_level_imports():
    source = (
        "from liposome_bench.errors import DatasetError\n"
        "def f():\n    from liposome_bench.svm import run_svm\n    import numpy\n"
        "class C:\n    def g(self):\n        import liposome_bench.cnn\n"
        "        from . import synth\n"
    )
    assert lazy_package_imports(ast.parse(source)) == [
        (3, "liposome_bench.svm"),
        (7, "liposome_bench.cnn"),
        (8, "."),
    ]


def test_cli_help_loads_no_model_framework():
    code = (
        "import sys, runpy; sys.argv = ['liposome-bench', '--help']\n"
        "try:\n    runpy.run_module('liposome_bench', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'keras', 'tensorflow', 'jax', 'torch', 'dask', 'distributed', 'matplotlib', 'sklearn'})\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.splitlines()[-1] == "HEAVY []", out[-500:]

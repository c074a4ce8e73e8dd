"""The installed package: one top-level name, no import cycle, no private import
across modules, the ``latentmix`` command.

The import graph is built from the source files with ``ast`` (imports are
absolute, ``latentmix.<subpackage>...``), so the test sees every module, also
those no other test imports.
"""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("data", "models", "inference", "scripts")


def _modules() -> dict[str, Path]:
    """latentmix.* module name -> source file, for every .py of the package."""
    modules = {}
    for folder in SUBPACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(["latentmix", *parts])] = path
    return modules


def _owner(name: str, modules) -> str | None:
    """The module of ours that ``name`` (a module or module.attribute) is in."""
    while name and name not in modules:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _import_graph():
    """(edges module -> imported modules, [(importer, private name, module)])."""
    modules = _modules()
    edges = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = []
                for alias in node.names:
                    # "from latentmix.x import y" imports module x.y when it is one.
                    full = f"{node.module}.{alias.name}"
                    targets.append(full if full in modules else node.module)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((name, alias.name, node.module))
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != name:
                    edges[name].add(owner)
    return edges, private


def _cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), except a
    package importing its own submodules (x -> x.y), which is no cycle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in edges:
        if node not in index:
            visit(node)
    return [c for c in found
            if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]


def test_no_import_cycle():
    edges, _ = _import_graph()
    assert _cycles(edges) == []


def test_the_import_graph_finds_a_cycle():
    """The detector itself: a two-module cycle is found, a package importing its
    submodule is not reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert _cycles({"p": {"p.x"}, "p.x": {"p"}}) == []


def test_no_private_name_imported_from_another_module():
    _, private = _import_graph()
    assert private == []


def test_imports_flow_down_the_layers():
    """data -> models -> inference -> scripts: no module imports a layer above."""
    order = {name: rank for rank, name in enumerate(SUBPACKAGES)}
    edges, _ = _import_graph()
    upward = [(source, target) for source, targets in edges.items()
              for target in targets
              if order[target.split(".")[1]] > order[source.split(".")[1]]]
    assert upward == []


@pytest.mark.slow
def test_the_wheel_installs_only_latentmix(tmp_path):
    """A plain (non-editable) install puts exactly one top-level package into
    site-packages, and every subpackage of the source tree is in it."""
    # Built from a copy: setuptools writes build/ next to pyproject.toml.
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", *SUBPACKAGES):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--wheel-dir", str(wheels), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    (wheel,) = wheels.glob("latentmix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {
        "latentmix"}
    packages = {str(Path(name).parent) for name in names
                if name.endswith("__init__.py")}
    expected = {str(Path("latentmix") / path.parent.relative_to(ROOT))
                for folder in SUBPACKAGES
                for path in (ROOT / folder).rglob("__init__.py")}
    assert expected <= packages, sorted(expected - packages)
    assert "latentmix/data/faithful.csv" in names
    entry_points = [name for name in names if name.endswith("entry_points.txt")]
    assert entry_points


def test_latentmix_command_lists_its_subcommands():
    from latentmix.scripts import cli

    completed = subprocess.run([sys.executable, "-m", "latentmix.scripts.cli",
                                "--help"], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0
    for name in cli.SUBCOMMANDS:
        assert name in completed.stdout
    unknown = subprocess.run([sys.executable, "-m", "latentmix.scripts.cli",
                              "train"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown subcommand" in unknown.stderr


def test_a_subcommand_is_the_script(tmp_path):
    """``latentmix fit`` runs scripts/fit.py's main: the same usage errors."""
    completed = subprocess.run(
        [sys.executable, "-m", "latentmix.scripts.cli", "fit", "gaussian-mixture",
         "--data", str(tmp_path / "absent.csv"), "--k", "2", "--out",
         str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 3
    assert "not found" in completed.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "latentmix.scripts.cli", "fit", "--help"],
        capture_output=True, text=True, timeout=60).stdout
    assert help_text.startswith("usage: latentmix fit")

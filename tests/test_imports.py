"""The code's shape: no import circles anywhere (module-level or inside functions), the installed
packages (model, search) never reach into the repository or the study, and they import from a
non-editable install."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("model", "search", "study", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Project modules a file imports, at any depth of its code (`from a.b import c` names a.b.c
    when that is a module, else a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each once (as the path from its first module back to it)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(graph()) == []


def test_the_installed_packages_use_neither_the_study_nor_the_repository():
    edges = graph()
    for module, imported in edges.items():
        if module.split(".")[0] in ("model", "search"):
            assert not {m for m in imported if m.split(".")[0] in ("study", "bench")}, module
    for path in [*(ROOT / "model").rglob("*.py"), *(ROOT / "search").rglob("*.py")]:
        text = path.read_text()  # a file beside the module (package data) is fine; a path above it is not
        assert text.count("__file__") == text.count("Path(__file__).with_name("), path


def test_a_non_editable_install_imports_and_runs(tmp_path):
    """pip install . (no -e) into a folder, then import and use the packages from outside the
    repository: no path into the checkout is needed."""
    import shutil

    source, target = tmp_path / "source", tmp_path / "site"  # a copy: the build writes into its source folder
    for name in ("model", "search"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--target",
                    str(target), str(source)], check=True, capture_output=True, timeout=300)
    code = ("import search.targets, search.judge, search.space, model.train, model.encoder; "
            "print(search.targets.calibrated().source); print(model.train.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(target), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout and "calibrated" in out.stdout  # the package data file came along

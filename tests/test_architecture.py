"""Dependency rules, checked on the source (AST), so a violation fails the build."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".")[0]


FORBIDDEN_IN_CORE = {"flask", "celery", "redis", "label_studio_sdk", "annotator_bridge", "kombu", "werkzeug"}


@pytest.mark.parametrize("path", _files("al_loop"), ids=lambda p: str(p.relative_to(REPO)))
def test_core_never_imports_web_queue_or_label_studio(path: Path) -> None:
    bad = {i for i in _imports(path) if _top(i) in FORBIDDEN_IN_CORE}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_only_one_module_imports_modal() -> None:
    users = {
        str(p.relative_to(REPO))
        for pkg in ("al_loop", "annotator_bridge")
        for p in _files(pkg)
        if any(_top(i) == "modAL" for i in _imports(p))
    }
    assert users == {"al_loop/strategies/modal_adapter.py"}


def test_only_the_labelstudio_package_imports_the_sdk() -> None:
    users = {
        str(p.relative_to(REPO))
        for pkg in ("al_loop", "annotator_bridge")
        for p in _files(pkg)
        if any(_top(i) == "label_studio_sdk" for i in _imports(p))
    }
    assert users, "the Label Studio bridge should use the SDK"
    assert all(u.startswith("annotator_bridge/labelstudio/") for u in users), users


@pytest.mark.parametrize("package", ["al_loop/strategies", "al_loop/data", "al_loop/store"])
def test_numpy_only_packages_do_not_import_torch(package: str) -> None:
    for path in _files(package):
        bad = {i for i in _imports(path) if _top(i) in {"torch", "transformers"}}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_no_pickle_anywhere() -> None:
    for pkg in ("al_loop", "annotator_bridge"):
        for path in _files(pkg):
            bad = {i for i in _imports(path) if _top(i) in {"pickle", "dill", "joblib", "cloudpickle"}}
            assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
            assert "torch.save(" not in path.read_text(), f"{path} uses torch.save (pickle); use safetensors"


# ------------------------------------------------------------------------------ import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for pkg in ("al_loop", "annotator_bridge") for p in _files(pkg)}


def _resolve(name: str) -> str | None:
    """The project module an import names: itself, else its nearest enclosing package (None if not ours)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _edges(module: str) -> set[str]:
    """Every project module ``module`` imports, anywhere in the file (also lazily, also under TYPE_CHECKING).

    ``from pkg import sub`` counts as an import of ``pkg.sub`` when that is a module.
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                out.add(target)
    return out


GRAPH = {m: _edges(m) for m in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert _cycles() == []


LAYERS: list[tuple[str, ...]] = [
    # lowest first; a module may import its own layer and the layers below it, never one above
    ("al_loop", "al_loop.types", "al_loop.errors"),
    ("al_loop.config", "al_loop.states", "al_loop.model_paths"),
    ("al_loop.data",),
    ("al_loop.store", "al_loop.strategies", "al_loop.training"),
    ("al_loop.models",),
    ("al_loop.rounds",),
    ("al_loop.simulate",),
    ("annotator_bridge", "annotator_bridge.settings", "annotator_bridge.client"),
    ("annotator_bridge.labelstudio", "annotator_bridge.dispatch"),
    ("annotator_bridge.loop", "annotator_bridge.monitoring"),
    ("annotator_bridge.worker", "annotator_bridge.web"),
    ("annotator_bridge.stack", "annotator_bridge.commands"),
    ("annotator_bridge.cli",),
]


def _layer(module: str) -> int:
    best, level = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    assert level >= 0, f"{module} is in no layer of tests/test_architecture.py"
    return level


def test_imports_only_run_down_the_layers() -> None:
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if _layer(t) > _layer(m))
    assert upward == []


def test_the_store_does_not_import_rounds() -> None:
    store = {m for m in GRAPH if m == "al_loop.store" or m.startswith("al_loop.store.")}
    assert store, "no store modules found"
    bad = sorted(f"{m} -> {t}" for m in store for t in GRAPH[m] if t.startswith("al_loop.rounds"))
    assert bad == []


MAX_MODULE_LINES = 420
MAX_CLASS_LINES = 250
# Core modules still over the caps, to be split; an entry must go once its module fits (tested below).
OVER_THE_CAPS = {
    "al_loop/data/readers.py",
    "al_loop/models/model.py",
    "al_loop/rounds/service.py",
    "al_loop/store/repository.py",
    "al_loop/strategies/base.py",
}


def _oversized(path: Path) -> list[str]:
    """Why ``path`` breaks the size caps (none: it fits)."""
    text = path.read_text()
    found = []
    lines = text.count("\n")
    if lines > MAX_MODULE_LINES:
        found.append(f"{lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > MAX_CLASS_LINES:
                found.append(f"class {node.name} has {size} lines")
    return found


@pytest.mark.parametrize("package", ["al_loop", "annotator_bridge"])
def test_modules_and_classes_are_small(package: str) -> None:
    """No module over 420 lines, no class over 250: one job per module."""
    big = {str(p.relative_to(REPO)): why for p in _files(package) if (why := _oversized(p))}
    assert {m: why for m, why in big.items() if m not in OVER_THE_CAPS} == {}
    fits = sorted(m for m in OVER_THE_CAPS if m.startswith(package + "/") and m not in big)
    assert fits == [], f"{fits} fit the caps now (or are gone): take them off OVER_THE_CAPS"


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    """The checker itself: an import inside a function or under TYPE_CHECKING is an edge too."""
    assert "annotator_bridge.worker.probe" in GRAPH["annotator_bridge.commands.status"]  # imported in a function
    assert "al_loop.states" in GRAPH["al_loop.store.repository"]

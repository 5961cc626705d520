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

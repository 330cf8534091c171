"""The floors of the house: the science imports nothing above it, and only the Celery glue imports the backend."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABOVE_THE_SCIENCE = ("backend", "workers.glue", "celery", "kombu", "fastapi", "sqlalchemy", "starlette", "redis")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _offending(path: Path, banned: tuple[str, ...]) -> list[str]:
    return sorted(name for name in _imports(path) if any(name == b or name.startswith(b + ".") for b in banned))


def test_the_science_imports_nothing_above_it():
    files = sorted((ROOT / "workers" / "landscape").rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(ROOT)): _offending(f, ABOVE_THE_SCIENCE) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_glue_imports_the_backend_from_workers():
    files = [f for f in sorted((ROOT / "workers").rglob("*.py")) if "glue" not in f.relative_to(ROOT).parts]
    bad = {str(f.relative_to(ROOT)): _offending(f, ("backend",)) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_rule_catches_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from backend.db import new_session\nimport workers.glue.tasks\nfrom . import nets\n")
    assert _offending(probe, ABOVE_THE_SCIENCE) == ["backend.db", "backend.db.new_session", "workers.glue.tasks"]

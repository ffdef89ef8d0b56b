"""The planted-bug catalogue cannot rot unnoticed: ``make test`` validates it on this tree.

The mutants themselves run with ``make mutation`` (``tests/mutation/run.py``); these
checks are the cheap part: every entry's ``find`` text occurs ``count`` times in the
current code, its tests exist, and the harness refuses a copy that imports the editable
install's code instead of its own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("mutation_run", Path(__file__).with_name("run.py"))
assert _spec is not None and _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
sys.modules["mutation_run"] = run  # dataclasses look their module up by name
_spec.loader.exec_module(run)


def test_catalogue_is_valid_on_this_tree() -> None:
    entries = run.load_entries()
    assert entries, f"no entries in {run.ENTRIES}"
    problems = run.validate(entries)
    assert not problems, "\n".join(problems)


def _tree(root: Path) -> None:
    (root / "dicomnode").mkdir(parents=True)
    (root / "dicomnode" / "__init__.py").write_text("")
    (root / "dicomnode" / "limits.py").write_text("LIMIT = 7\nOTHER_LIMIT = 7\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_limits.py").write_text("def test_limit():\n    pass\n")


def test_validation_names_the_entry_whose_find_or_test_rotted(tmp_path: Path) -> None:
    _tree(tmp_path / "repo")
    (tmp_path / "entries").mkdir()
    (tmp_path / "entries" / "area.yaml").write_text(
        "- {id: limit-off, promise: p, file: dicomnode/limits.py, find: ' = 7', replace: ' = 8',\n"
        "   tests: [tests/test_limits.py::test_limit]}\n"
        "- {id: limit-gone, promise: p, file: dicomnode/limits.py, find: 'LIMIT = 7', replace: 'LIMIT = 8',\n"
        "   count: 2, tests: [tests/test_limits.py::test_renamed]}\n"
    )
    problems = run.validate(run.load_entries(tmp_path / "entries"), tmp_path / "repo")
    assert problems == [
        "area.yaml entry 'limit-off': 'find' occurs 2 time(s) in dicomnode/limits.py, expected 1: ' = 7'",
        "area.yaml entry 'limit-gone': test test_renamed is not defined in tests/test_limits.py "
        "(node id 'tests/test_limits.py::test_renamed')",
    ]


def test_malformed_entry_is_refused_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "area.yaml").write_text("- {id: x, promise: p, file: f, find: a, replace: b, tests: [t], nets: true}\n")
    with pytest.raises(run.CatalogueError, match=r"area.yaml entry 'x': unknown key\(s\) \['nets'\]"):
        run.load_entries(tmp_path)


def test_isolation_check_refuses_a_copy_that_imports_other_code(tmp_path: Path) -> None:
    empty = tmp_path / "no-package" / "main"
    empty.mkdir(parents=True)
    with pytest.raises(run.CatalogueError, match="the copy does not run its own code"):
        run.check_isolation(empty)  # dicomnode comes from the editable install, not from here
    _tree(tmp_path / "copy" / "main")
    run.check_isolation(tmp_path / "copy" / "main")

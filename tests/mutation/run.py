#!/usr/bin/env python3
"""Planted-bug check: every curated mutation must make the tests that guard it fail.

``make mutation`` runs this script (it is not a test module: pytest does not collect it).
The catalogue is every ``tests/mutation/entries/*.yaml``: a list of entries ::

    - id: spool-no-fsync                 # unique, kebab-case
      promise: "A C-STORE success means the instance is on disk"
      file: dicomnode/spool.py           # repo-relative
      find: "            os.fsync(fh.fileno())\\n"
      replace: "            pass\\n"
      count: 1                           # occurrences of `find` (default 1); all are replaced
      tests: [tests/core/test_durability.py::test_ack_only_after_file_and_folder_synced]
      netns: false                       # run the tests inside `unshare -n` (Orthanc etc.)

Steps:

1. Validate the catalogue against the current working tree (unique ids, the file exists,
   ``find`` occurs exactly ``count`` times, the test files and functions exist). Any
   mismatch is an error of the catalogue: exit 2 with the entry named.
2. Copy the working tree (``git ls-files --cached --others --exclude-standard``; never
   ``.venv`` or ``var/``) to a temporary folder and prove that code imported there is
   the copy's and not the editable install's (``/work/main``): exit 2 otherwise.
3. Baseline: the union of the selected entries' tests must pass on the unmutated copy
   (one run per ``netns`` group); an entry whose tests fail there proves nothing and
   counts as ``error``.
4. Per entry, a fresh copy with the replacement applied, then
   ``python -m pytest -q -x -p no:cacheprovider <tests>``. Exit status 1 (tests failed)
   is ``caught``; 0 is ``SURVIVED``; 2–5 (collection error, no tests, usage) or the
   timeout are ``error`` (an error of the catalogue, not a catch).

Exit status: 0 when every selected entry is caught, 1 when one survived or errored,
2 for an invalid catalogue or a copy that does not run its own code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ENTRIES = REPO / "tests" / "mutation" / "entries"
#: Never copied into a mutant's tree (the venv is used in place; var/ is run-time state).
EXCLUDED_TOP = (".venv", "var")
REQUIRED = {"id": str, "promise": str, "file": str, "find": str, "replace": str, "tests": list}
OPTIONAL = {"count": int, "netns": bool}
ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
PYTEST = ("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider")


class CatalogueError(Exception):
    """The catalogue or the set-up is wrong (exit status 2)."""


@dataclass(frozen=True)
class Entry:
    """One planted bug and the tests that must catch it."""

    id: str
    promise: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    count: int = 1
    netns: bool = False
    source: str = ""


@dataclass
class Result:
    """What happened to one entry."""

    id: str
    promise: str
    outcome: str  # caught | SURVIVED | error
    seconds: float = 0.0
    returncode: int | None = None
    detail: str = ""
    copy: str = ""
    output_tail: str = field(default="", repr=False)


# ------------------------------------------------------------------ catalogue


def load_entries(folder: Path = ENTRIES) -> list[Entry]:
    """Read every ``*.yaml`` in ``folder`` into entries (structure checked, not the tree).

    Raises
    ------
    CatalogueError
        A file is not a YAML list of mappings, a key is missing, unknown or mistyped.
    """
    entries: list[Entry] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text()) or []
        except yaml.YAMLError as exc:
            raise CatalogueError(f"{path.name}: not valid YAML: {exc}") from exc
        if not isinstance(data, list):
            raise CatalogueError(f"{path.name}: must be a list of entries, got {type(data).__name__}")
        entries.extend(_entry(path.name, k, raw) for k, raw in enumerate(data))
    return entries


def _entry(source: str, index: int, raw: Any) -> Entry:
    where = f"{source} entry {index}"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: must be a mapping")
    where = f"{source} entry {raw.get('id', index)!r}"
    unknown = set(raw) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise CatalogueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: "
                             f"{sorted({**REQUIRED, **OPTIONAL})}")
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        if key in REQUIRED and key not in raw:
            raise CatalogueError(f"{where}: missing key '{key}'")
        if key in raw and not (isinstance(raw[key], kind) and not (kind is int and isinstance(raw[key], bool))):
            raise CatalogueError(f"{where}: '{key}' must be {kind.__name__}, got {raw[key]!r}")
    if not raw["tests"] or not all(isinstance(t, str) and t for t in raw["tests"]):
        raise CatalogueError(f"{where}: 'tests' must be a non-empty list of pytest node ids")
    return Entry(**{**raw, "tests": tuple(raw["tests"])}, source=source)


def validate(entries: Sequence[Entry], root: Path = REPO) -> list[str]:
    """Problems of the catalogue against the tree at ``root`` (empty list = valid).

    Checks unique kebab-case ids, that ``file`` exists, that ``find`` occurs exactly
    ``count`` times and differs from ``replace``, and that every test file exists and
    defines the test function named in the node id.
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    for entry in entries:
        name = f"{entry.source} entry {entry.id!r}"
        if entry.id in seen:
            problems.append(f"{name}: id already used in {seen[entry.id]}")
        seen.setdefault(entry.id, entry.source)
        if not ID_RE.match(entry.id):
            problems.append(f"{name}: id must be kebab-case (a-z, 0-9, '-')")
        problems.extend(f"{name}: {p}" for p in _entry_problems(entry, root))
    return problems


def _entry_problems(entry: Entry, root: Path) -> Iterable[str]:
    target = root / entry.file
    if entry.count < 1:
        yield f"count must be at least 1, got {entry.count}"
    if not entry.find or entry.find == entry.replace:
        yield "'find' must be non-empty and differ from 'replace'"
    if not target.is_file():
        yield f"file {entry.file} does not exist"
    else:
        found = target.read_text().count(entry.find)
        if found != entry.count:
            yield f"'find' occurs {found} time(s) in {entry.file}, expected {entry.count}: {entry.find!r}"
    for test in entry.tests:
        yield from _test_problems(test, root)


def _test_problems(node_id: str, root: Path) -> Iterable[str]:
    path, _, rest = node_id.partition("::")
    test_file = root / path
    if not path.startswith("tests/") or not test_file.is_file():
        yield f"test file {path} does not exist (node id {node_id!r})"
        return
    if rest:
        function = rest.split("::")[-1].split("[")[0]
        if not re.search(rf"^\s*(async\s+)?def {re.escape(function)}\(", test_file.read_text(), re.M):
            yield f"test {function} is not defined in {path} (node id {node_id!r})"


def select(entries: Sequence[Entry], only: str | None) -> list[Entry]:
    """The entries named in ``--only`` (comma-separated ids), or all.

    Raises
    ------
    CatalogueError
        An id in ``only`` is not in the catalogue.
    """
    if not only:
        return list(entries)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {e.id for e in entries}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise CatalogueError(f"--only: no entry with id {', '.join(missing)} (see --list)")
    return [e for e in entries if e.id in wanted]


# ------------------------------------------------------------------ copies


def tree_files(root: Path = REPO) -> list[str]:
    """Repo-relative paths of the working tree: tracked + untracked, not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True)
    names = sorted({n for n in out.stdout.decode().split("\0") if n})
    return [n for n in names if n.split("/", 1)[0] not in EXCLUDED_TOP]


def make_copy(files: Sequence[str], prefix: str) -> Path:
    """Copy ``files`` into ``<tmp>/<repo name>``; ``<tmp>/shared`` links to the sibling ``shared/``.

    Returns
    -------
    Path
        The copy's root.
    """
    base = Path(tempfile.mkdtemp(prefix=f"dicomnode-mutation-{prefix}-"))
    copy = base / REPO.name
    for name in files:
        src = REPO / name
        if not src.exists() and not src.is_symlink():
            continue  # tracked but deleted in the working tree
        dst = copy / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    if (REPO.parent / "shared").is_dir():
        (base / "shared").symlink_to(REPO.parent / "shared")
    return copy


def apply(entry: Entry, copy: Path) -> None:
    """Replace every occurrence of ``find`` in the copy's file (count re-checked)."""
    target = copy / entry.file
    text = target.read_text()
    if text.count(entry.find) != entry.count:
        raise CatalogueError(f"entry {entry.id!r}: 'find' occurs {text.count(entry.find)} time(s) "
                             f"in the copy of {entry.file}, expected {entry.count}")
    target.write_text(text.replace(entry.find, entry.replace))


def environment(copy: Path) -> dict[str, str]:
    """The environment of every command run in ``copy``: its code first on the path."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    testdata = os.environ.get("DICOMNODE_TESTDATA") or str(REPO.parent / "shared" / "testdata")
    env["DICOMNODE_TESTDATA"] = testdata
    return env


def command(args: Sequence[str], netns: bool) -> list[str]:
    """``args``, wrapped in a private network namespace when ``netns``."""
    if not netns:
        return list(args)
    quoted = " ".join(_quote(a) for a in args)
    return ["unshare", "-n", "bash", "-c", f"ip link set lo up && exec {quoted}"]


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def run_in(copy: Path, args: Sequence[str], netns: bool, timeout: float) -> tuple[int | None, str, float]:
    """Run ``args`` in ``copy``; returns (exit status or None on timeout, output, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(command(args, netns), cwd=copy, env=environment(copy), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    return code, out.decode(errors="replace"), time.monotonic() - started


def check_isolation(copy: Path) -> None:
    """Prove that ``import dicomnode`` in the copy's environment imports the copy.

    Checked from the copy (as pytest runs) and from outside it (as a subprocess of a test
    may run), since the editable install would otherwise import ``/work/main``.

    Raises
    ------
    CatalogueError
        ``dicomnode`` resolved outside the copy.
    """
    probe = [PYTHON, "-c", "import dicomnode; print(dicomnode.__file__)"]
    for cwd in (copy, copy.parent):
        out = subprocess.run(probe, cwd=cwd, env=environment(copy), capture_output=True, text=True, timeout=120)
        where = out.stdout.strip()
        if out.returncode != 0 or not Path(where).resolve().is_relative_to(copy.resolve()):
            raise CatalogueError(f"the copy does not run its own code: from {cwd}, dicomnode is {where!r} "
                                 f"(expected inside {copy}); {out.stderr.strip()[-500:]}")


# ------------------------------------------------------------------ running


def pytest_args(tests: Iterable[str]) -> list[str]:
    """The pytest command line for ``tests`` with the project's interpreter."""
    return [PYTHON, *PYTEST, *tests]


def failed_ids(output: str) -> list[str]:
    """Node ids of the ``FAILED`` / ``ERROR`` lines of pytest's short summary."""
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)


def baseline(entries: Sequence[Entry], files: Sequence[str], timeout: float, keep: bool) -> dict[str, Result]:
    """Run the union of the entries' tests unmutated (one run per netns group).

    Returns
    -------
    dict
        ``error`` results of the entries whose tests did not pass unmutated.
    """
    broken: dict[str, Result] = {}
    for netns in (False, True):
        group = [e for e in entries if e.netns is netns]
        if not group:
            continue
        tests = list(dict.fromkeys(t for e in group for t in e.tests))
        copy = make_copy(files, "baseline")
        args = [a for a in pytest_args(tests) if a != "-x"]
        code, out, secs = run_in(copy, args, netns, timeout * len(group))
        print(f"baseline{' (netns)' if netns else ''}: {len(tests)} test id(s), exit {code}, {secs:.1f} s",
              flush=True)
        if code == 1 and _passes_on_rerun(copy, failed_ids(out), netns, timeout):
            code = 0
        if code != 0:
            broken.update(_baseline_errors(group, code, out))
            print(_tail(out, 40), flush=True)
        _cleanup(copy, keep)
    return broken


def _passes_on_rerun(copy: Path, failed: Sequence[str], netns: bool, timeout: float) -> bool:
    """Run the tests that failed unmutated once more: a test that then passes is flaky
    (named in the output for someone to fix), not a reason to give up on its entries."""
    if not failed:
        return False
    code, _, secs = run_in(copy, [a for a in pytest_args(failed) if a != "-x"], netns, timeout)
    if code == 0:
        print(f"baseline: FLAKY (failed, then passed on rerun in {secs:.1f} s): {', '.join(failed)}", flush=True)
    return code == 0


def _baseline_errors(group: Sequence[Entry], code: int | None, out: str) -> dict[str, Result]:
    failed = failed_ids(out)
    errors = {}
    for entry in group:
        hit = [f for f in failed if any(f == t or f.startswith((t + "[", t + "::")) for t in entry.tests)]
        if code != 1 or hit:
            why = f"fails unmutated: {', '.join(hit)}" if hit else f"baseline run exit {code}"
            errors[entry.id] = Result(entry.id, entry.promise, "error", detail=why, output_tail=_tail(out, 40))
    return errors


def run_entry(entry: Entry, files: Sequence[str], timeout: float, keep: bool) -> Result:
    """Plant the entry's bug in a fresh copy and run its tests."""
    copy = make_copy(files, entry.id)
    try:
        apply(entry, copy)
        code, out, secs = run_in(copy, pytest_args(entry.tests), entry.netns, timeout)
    except CatalogueError as exc:
        _cleanup(copy, keep)
        return Result(entry.id, entry.promise, "error", detail=str(exc))
    result = Result(entry.id, entry.promise, _outcome(code), secs, code, output_tail=_tail(out, 40))
    if code is None:
        result.detail = f"timeout after {timeout:.0f} s"
    elif code not in (0, 1):
        result.detail = f"pytest exit {code} (collection error / no tests / usage): not a catch"
    elif code == 1:
        result.detail = ", ".join(failed_ids(out))
    if keep:
        result.copy = str(copy)
    _cleanup(copy, keep)
    return result


def _outcome(code: int | None) -> str:
    return {1: "caught", 0: "SURVIVED"}.get(code, "error") if code is not None else "error"


def _cleanup(copy: Path, keep: bool) -> None:
    if keep:
        print(f"  kept {copy}", flush=True)
    else:
        shutil.rmtree(copy.parent, ignore_errors=True)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# ------------------------------------------------------------------ reporting


def line(result: Result) -> str:
    """One line per entry: outcome, seconds, id, promise."""
    return f"{result.outcome:<9} {result.seconds:7.1f} s  {result.id:<38} {result.promise}"


def report(results: Sequence[Result]) -> str:
    """The final table and the ``N/N caught`` figure."""
    rows = ["", f"{'outcome':<9} {'seconds':>9}  {'id':<38} detail", "-" * 100]
    for r in results:
        rows.append(f"{r.outcome:<9} {r.seconds:7.1f} s  {r.id:<38} {r.detail[:120]}")
    caught = sum(r.outcome == "caught" for r in results)
    rows.append(f"{caught}/{len(results)} caught")
    return "\n".join(rows)


def list_entries(entries: Sequence[Entry]) -> str:
    """``--list``: id, file, netns, tests and promise of each entry."""
    out = []
    for e in entries:
        out.append(f"{e.id}  [{e.source}] {e.file}{'  (netns)' if e.netns else ''}\n    {e.promise}")
        out.extend(f"    - {t}" for t in e.tests)
    return "\n".join(out)


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated entry ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.add_argument("--jobs", type=int, default=1, help="entries run at once (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (paths are printed)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per entry (default 600)")
    parser.add_argument("--entries", type=Path, default=ENTRIES, help="catalogue folder (default %(default)s)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Validate, check isolation, run the baseline and the mutants; see the module docstring."""
    args = parse_args(argv)
    try:
        entries = select(load_entries(args.entries), args.only)
        problems = validate(entries)
        if args.only:  # ids must be unique across the whole catalogue even when running a few
            problems += [p for p in validate(load_entries(args.entries)) if "id already used" in p]
        if problems:
            raise CatalogueError("invalid catalogue:\n  " + "\n  ".join(problems))
        if args.list:
            print(list_entries(entries))
            return 0
        files = tree_files()
        probe = make_copy(files, "isolation")
        check_isolation(probe)
        _cleanup(probe, keep=False)
    except CatalogueError as exc:
        print(f"mutation: {exc}", file=sys.stderr)
        return 2
    print(f"mutation: {len(entries)} entries, {len(files)} files per copy, --jobs {args.jobs}", flush=True)
    results = run_all(entries, files, args)
    print(report(results), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if results and all(r.outcome == "caught" for r in results) else 1


def run_all(entries: Sequence[Entry], files: Sequence[str], args: argparse.Namespace) -> list[Result]:
    """Baseline, then every entry whose baseline passed; results in catalogue order."""
    broken = baseline(entries, files, args.timeout, args.keep)
    for result in broken.values():
        print(line(result) + f"\n          {result.detail}", flush=True)
    lock = threading.Lock()

    def one(entry: Entry) -> Result:
        result = run_entry(entry, files, args.timeout, args.keep)
        with lock:
            print(line(result), flush=True)
            if result.outcome != "caught":
                print(f"          {result.detail}\n" + _indent(result.output_tail), flush=True)
        return result

    todo = [e for e in entries if e.id not in broken]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = {r.id: r for r in pool.map(one, todo)}
    return [broken.get(e.id) or done[e.id] for e in entries]


def _indent(text: str) -> str:
    return "\n".join("          | " + t for t in text.splitlines()[-15:])


if __name__ == "__main__":
    sys.exit(main())

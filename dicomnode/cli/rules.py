"""``dicomnode rules test FILES…``: which route each file matches, and why; then, per series,
the guard's verdict for the matched route's model (pass, flags, or which requirement fails)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dicomnode.cli.common import load
from dicomnode.config import Config, Route

__all__ = ["add_parser", "run_test"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("rules", help="routing rule tools")
    rules_sub = parser.add_subparsers(dest="rules_command", required=True)
    test = rules_sub.add_parser("test", help="show which route each file matches and why, and the model's verdict")
    test.add_argument("files", nargs="+")
    test.add_argument("--config", type=Path)
    test.add_argument("--no-guard", action="store_true", help="routing only; skip the input requirements check")
    test.set_defaults(func=run_test)


def _series_files(given: list[Path], series_uid: str) -> list[Path]:
    """The given files of one series and, beside them in their folders, the rest of it."""
    from dicomnode.dicom.headers import read_info  # noqa: PLC0415

    found = set(given)
    for folder in {p.parent for p in given}:
        for path in folder.iterdir():
            if path.is_file() and path not in found:
                try:
                    if read_info(path)[1].get("SeriesInstanceUID") == series_uid:
                        found.add(path)
                except Exception:  # noqa: BLE001,S112 - not DICOM: not part of the series
                    continue
    return sorted(found)


def _verdict(config: Config, route: Route, files: list[Path]) -> list[str]:
    """The guard's verdict lines for one series routed to ``route``."""
    from dicomnode.errors import DicomNodeError  # noqa: PLC0415
    from dicomnode.inference.manifest import load_bundle  # noqa: PLC0415
    from dicomnode.pipelines.guard import check_files  # noqa: PLC0415

    try:
        bundle = load_bundle(config.models[route.model].path, verify=False)
        report = check_files(route.pipeline, bundle, files)
    except DicomNodeError as exc:
        return [f"  guard: cannot check ({exc})"]
    if report is None or not report.verdicts:
        return [f"  guard: model {route.model} declares no requirements for {route.pipeline}"]
    head = f"  guard ({bundle.id} {bundle.version}, {len(files)} files): "
    if report.refused:
        action = "a 'not analysed' SR" if route.on_refused == "report" else "nothing (on_refused: silent)"
        lines = [head + f"REFUSED; route {route.name} would send {action}"]
        lines += [f"    FAIL {v}" for v in report.failed]
    else:
        lines = [head + "accepted"]
    lines += [f"    ok   {v}" for v in report.verdicts if v.passed]
    lines += [f"    FLAG {flag}" for flag in report.flags]
    return lines


def run_test(args: argparse.Namespace) -> int:
    from dicomnode.dicom.headers import read_info  # noqa: PLC0415
    from dicomnode.routing import first_match  # noqa: PLC0415

    config = load(args)
    matched: dict[str, tuple[Route, list[Path]]] = {}
    for path in args.files:
        _, headers = read_info(Path(path))
        route, trace = first_match(config.routes, headers)
        print(f"{path}: {'→ ' + route.name + ' (' + route.pipeline + ')' if route else 'no route matched'}")
        for name, ok, reason in trace:
            print(f"  {'MATCH' if ok else 'no   '} {name}: {reason}")
        for skipped in config.routes[len(trace):]:
            print(f"  -     {skipped.name}: not tried (an earlier rule matched)")
        if route is not None:
            series = str(headers.get("SeriesInstanceUID", ""))
            matched.setdefault(series, (route, []))[1].append(Path(path))
    for series, (route, given) in ({} if args.no_guard else matched).items():
        files = _series_files(given, series)
        print(f"series {series} → {route.name}:")
        print("\n".join(_verdict(config, route, files)))
    return 0

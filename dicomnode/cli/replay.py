"""``dicomnode replay PATH… --to HOST:PORT``: send files/folders to a node, optionally wait for results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "print_findings", "run", "summarise"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("replay", help="send files/folders to a node over C-STORE")
    parser.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (recursive)")
    parser.add_argument("--to", required=True, metavar="HOST:PORT")
    parser.add_argument("--calling-aet", default="REPLAY")
    parser.add_argument("--called-aet", default="DICOMNODE")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel associations")
    parser.add_argument("--wait-results", type=Path, metavar="DIR",
                        help="wait for outputs in this folder destination and print findings")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for results")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def summarise(findings: dict[str, object]) -> str:
    """One line for a findings table: MRI LLN status, WSI slide class, or the JSON."""
    if "summary" in findings:
        return str(findings["summary"])
    if "lln_status" in findings:
        return (f"LLN {findings['lln_status']}: {findings.get('n_nodes')} node(s), "
                f"{findings.get('n_positive')} positive")
    if "class" in findings:
        return (f"slide class {findings['class']}, largest deposit {findings.get('largest_deposit_mm')} mm, "
                f"tissue {findings.get('tissue_area_mm2')} mm²")
    return json.dumps(findings)[:120]


def print_findings(results: dict[str, dict[str, object]], series: set[str]) -> None:
    print(f"\n{'SERIES':<66} {'PIPELINE':<14} RESULT")
    for uid in sorted(series):
        res = results.get(uid)
        if res is None:
            print(f"{uid:<66} {'-':<14} no result (unrouted, still running, or timed out)")
            continue
        if res["_kind"] == "error.json":
            print(f"{uid:<66} {str(res.get('pipeline')):<14} ERROR {res.get('error')}")
            continue
        findings = res.get("findings") or {}
        assert isinstance(findings, dict)
        print(f"{uid:<66} {str(res.get('pipeline')):<14} {summarise(findings)}")
        for node in findings.get("nodes", []) if isinstance(findings.get("nodes"), list) else []:
            print(f"{'':<66} {'':<14}   {node.get('tracking_id')}: {node.get('side')} {node.get('station')}, "
                  f"short {node.get('short_axis_mm')} mm, long {node.get('long_axis_mm')} mm, "
                  f"{node.get('status')} ({', '.join(node.get('reasons') or []) or 'no positive criterion'})")


def run(args: argparse.Namespace) -> int:
    from dicomnode.replay import scan, send, wait_results  # noqa: PLC0415 - pynetdicom only for replay

    host, _, port = str(args.to).rpartition(":")
    files, skipped = scan(args.paths)
    if not files:
        print(f"replay: no DICOM files under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    series = {f.series_uid for f in files}
    print(f"sending {len(files)} instances of {len(series)} series to {args.called_aet}@{args.to}"
          + (f" ({len(skipped)} non-DICOM files skipped)" if skipped else ""), file=sys.stderr)
    statuses = send(files, host, int(port), calling=args.calling_aet, called=args.called_aet,
                    concurrency=args.concurrency, quiet=args.quiet)
    for text, count in sorted(statuses.items()):
        print(f"  {count:>6}  {text}")
    failed = sum(c for t, c in statuses.items() if not t.startswith(("0x0000", "0xB")))
    if args.wait_results:
        results = wait_results(args.wait_results, series, args.timeout)
        print_findings(results, series)
        if not results or any(r["_kind"] == "error.json" for r in results.values()):
            return 1
    return 1 if failed else 0

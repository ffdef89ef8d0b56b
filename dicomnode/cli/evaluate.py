"""``dicomnode evaluate CASES --model models/<id> --out DIR``: validate a model on labelled cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def _threshold(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("evaluate", help="run a model on labelled cases and report the studies' metrics",
                            description="Run a model bundle through the node's pipeline on a folder of cases "
                            "with ground truth; write report.html, metrics.json, cases.csv and plots.")
    parser.add_argument("cases", type=Path, help="folder with one sub-folder per case (+ optional labels.csv)")
    parser.add_argument("--model", type=Path, help="model bundle folder (models/<id>)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BUNDLE_A", "BUNDLE_B"),
                        help="run both bundles on the same cases and report paired differences")
    parser.add_argument("--out", type=Path, required=True, help="report folder (created)")
    parser.add_argument("--threshold", type=_threshold, action="append", default=[], metavar="KEY=VALUE",
                        help="override a threshold of the bundle (repeatable), e.g. gate_probability=0.2")
    parser.add_argument("--gate-sweep", type=_floats, default=(), metavar="G1,G2,...",
                        help="WSI: rerun the slides at these gate probabilities")
    parser.add_argument("--patch-fraction", type=float, default=0.2,
                        help="WSI: a patch is tumour when more than this fraction is annotated (default 0.2)")
    parser.add_argument("--patch-threshold", type=float, default=0.5,
                        help="WSI: patch probability at which the model calls tumour (default 0.5)")
    parser.add_argument("--device", help="mri-lln: auto, cpu or cuda[:N]")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicomnode.evaluate.core import Options, evaluate
    from dicomnode.evaluate.wsi import WsiOptions

    if (args.model is None) == (args.compare is None):
        print("evaluate: give --model BUNDLE or --compare BUNDLE_A BUNDLE_B", file=sys.stderr)
        return 2
    model, other = (args.model, None) if args.compare is None else tuple(args.compare)
    settings: dict[str, Any] = {}
    if args.device:
        settings["device"] = args.device
    options = Options(model=model, compare=other, thresholds=dict(args.threshold), gate_sweep=args.gate_sweep,
                      settings=settings, wsi=WsiOptions(args.patch_fraction, args.patch_threshold),
                      progress=not args.quiet)
    result = evaluate(args.cases, args.out, options)
    print(f"{result['n_evaluated']}/{result['n_cases']} cases evaluated; report: {args.out / 'report.html'}")
    return 0

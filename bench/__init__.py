"""Benchmarks run by ``make bench``; each script writes its figures with :func:`save_results`."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, rows: object) -> Path:
    """Write ``rows`` to ``bench/results/<name>.json`` (gitignored) and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(rows, indent=1))
    return path

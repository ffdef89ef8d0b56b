"""Push files and folders into a node over C-STORE (``dicomnode replay``; the command
line is :mod:`dicomnode.cli.replay`).

Files are read header-only to learn their SOP class and transfer syntax, so each
association proposes exactly the presentation contexts needed (SEG and label-map SEG
included); several associations can share the files. :func:`wait_results` waits for the
node's outputs in a folder destination.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from dicomnode.config import Destination
from dicomnode.dispatch import find_results
from dicomnode.errors import DispatchError
from dicomnode.net import status as st
from dicomnode.net import wire
from dicomnode.net.scu import open_association, store

__all__ = ["ReplayFile", "scan", "send", "wait_results"]


@dataclass(frozen=True)
class ReplayFile:
    path: Path
    sop_class: str
    syntax: str
    series_uid: str
    study_uid: str
    size: int


def scan(paths: Sequence[Path]) -> tuple[list[ReplayFile], list[str]]:
    """Find DICOM files under ``paths``; return them and the skipped (non-DICOM) paths."""
    found, skipped = [], []
    for root in paths:
        candidates = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in candidates:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
                    "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"])
                found.append(ReplayFile(path, str(ds.file_meta.MediaStorageSOPClassUID or ds.SOPClassUID),
                                        str(ds.file_meta.TransferSyntaxUID), str(ds.get("SeriesInstanceUID", "")),
                                        str(ds.get("StudyInstanceUID", "")), path.stat().st_size))
            except Exception:  # noqa: BLE001 - anything unreadable is simply not sent
                skipped.append(str(path))
    return found, skipped


class _Progress:
    def __init__(self, total: int, total_bytes: int, quiet: bool) -> None:
        self.total, self.total_bytes, self.quiet = total, total_bytes, quiet
        self.done = self.bytes = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def step(self, size: int) -> None:
        with self.lock:
            self.done += 1
            self.bytes += size
            if not self.quiet and (self.done % 10 == 0 or self.done == self.total):
                self.draw()

    def draw(self) -> None:
        secs = max(1e-6, time.monotonic() - self.started)
        frac = self.done / max(1, self.total)
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r[{bar:<30}] {self.done}/{self.total} instances  "
                         f"{self.bytes / secs / 1e6:6.1f} MB/s  {self.done / secs:6.0f} inst/s")
        sys.stderr.flush()


def _store_one(assoc: Any, item: ReplayFile) -> str:
    """Status text of one C-STORE ("no response" when the association dropped)."""
    try:
        code = store(assoc, item.path)
    except (ValueError, RuntimeError) as exc:
        return f"not sent: {exc}"[:80]
    return "no response" if code is None else st.describe(code)


def _again(peer: Destination, contexts: list[tuple[str, str]], assoc: Any, item: ReplayFile) -> tuple[Any, str]:
    """The peer dropped the association on ``item``: associate again and re-send it once
    (a duplicate is harmless: same SOP Instance UID)."""
    sys.stderr.write(f"\nno answer from {peer.host}:{peer.port} for {item.path} (association dropped); "
                     "associating again\n")
    if assoc.is_established:  # our side may not have seen the peer's A-ABORT yet
        assoc.abort()
    assoc = open_association(peer, contexts)
    return assoc, _store_one(assoc, item)


def _send_chunk(files: list[ReplayFile], peer: Destination, progress: _Progress) -> Counter[str]:
    """Send ``files`` over one association proposing exactly their contexts."""
    contexts = sorted({(f.sop_class, f.syntax) for f in files})
    statuses: Counter[str] = Counter()
    assoc = None
    try:
        assoc = open_association(peer, contexts)
        for index, item in enumerate(files):  # each file is read while the previous one's answer is awaited
            wire.read_ahead(files[index + 1].path if index + 1 < len(files) else None)
            status = _store_one(assoc, item)
            if status == "no response":  # aborted by the peer, timed out or garbled: start afresh
                assoc, status = _again(peer, contexts, assoc, item)
            statuses[status] += 1
            progress.step(item.size)
    except DispatchError as exc:  # no association (at all, or again after a drop)
        statuses[f"not sent: {exc}"] += len(files) - sum(statuses.values())
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
    return statuses


def send(files: list[ReplayFile], host: str, port: int, *, calling: str = "REPLAY", called: str = "DICOMNODE",
         concurrency: int = 1, quiet: bool = True, timeout_s: float = 60.0) -> Counter[str]:
    """Send ``files`` over ``concurrency`` associations; return a count per status text."""
    progress = _Progress(len(files), sum(f.size for f in files), quiet)
    peer = Destination(name="replay", type="dimse", ae_title=called, host=host, port=port, calling_ae_title=calling,
                       timeout_s=timeout_s)
    chunks: list[list[ReplayFile]] = [[] for _ in range(max(1, concurrency))]
    for i, item in enumerate(files):
        chunks[i % len(chunks)].append(item)
    total: Counter[str] = Counter()
    with ThreadPoolExecutor(len(chunks)) as pool:
        for result in pool.map(lambda c: _send_chunk(c, peer, progress), [c for c in chunks if c]):
            total.update(result)
    if not quiet:
        progress.draw()
        sys.stderr.write("\n")
    return total


def _result_of(folder: Path, series_uid: str) -> dict[str, object] | None:
    for path in find_results(folder, series_uid):
        try:
            return dict(json.loads(path.read_text()), _kind=path.name)
        except ValueError:
            return None
    return None


def wait_results(folder: Path, series: set[str], timeout_s: float) -> dict[str, dict[str, object]]:
    """Poll ``folder`` until every series has a result/error file or the timeout passes."""
    deadline, results = time.monotonic() + timeout_s, dict[str, dict[str, object]]()
    while time.monotonic() < deadline and len(results) < len(series):
        for uid in series - set(results):
            found = _result_of(folder, uid)
            if found is not None:
                results[uid] = found
        time.sleep(0.5)
    return results

"""A C-STORE success is sent only after the instance is durable on disk.

Two ways to get there (``spool.sync``): ``syncfs`` (default; group commit) and ``fsync``
(per file and folder). Both are checked here by the order of real events.

The page cache survives kill -9, so no kill test can see a missing fsync: this test records
the order of events instead. The real node runs in-process; ``os.fsync`` (with the path of
its descriptor), ``os.replace`` and ``os.mkdir`` are wrapped by recorders that call the real
functions, and the SCP's outgoing DIMSE messages are recorded by pynetdicom's
``EVT_DIMSE_SENT`` in the thread that sends them. For every C-STORE response with status
0x0000, the answering thread must already have, in this order:

* fsync'd the temp file, renamed it to ``incoming/<series>/<sop>.dcm`` and fsync'd that folder;
* made the series folder and fsync'd ``incoming/``;
* written ``series.json`` the same way (fsync temp file, rename, fsync folder).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import MR_SOP, mr_series, node_config, running_node
from netutil import store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt

from dicomnode import spool as spool_module

Event = tuple[Any, ...]


class Recorder:
    """Events in the order they completed, each tagged with the thread that caused it."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Event]] = []
        self._lock = threading.Lock()

    def add(self, *event: Any) -> None:
        with self._lock:
            self.events.append((threading.get_ident(), event))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap ``os.fsync``/``os.replace``/``os.mkdir``: the real call first, then the record."""
        real_fsync, real_replace, real_mkdir = os.fsync, os.replace, os.mkdir

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            real_fsync(fd)
            self.add("fsync", path)

        def replace(src: Any, dst: Any, **kwargs: Any) -> None:
            real_replace(src, dst, **kwargs)
            self.add("replace", os.path.realpath(src), os.path.realpath(dst))

        def mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
            real_mkdir(path, mode, **kwargs)
            self.add("mkdir", os.path.realpath(path))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "mkdir", mkdir)

    def dimse_sent(self, event: Any) -> None:
        """EVT_DIMSE_SENT handler: record C-STORE responses as they are sent."""
        message = event.message
        if type(message).__name__ == "C_STORE_RSP":
            command = message.command_set
            self.add("answer", str(command.AffectedSOPInstanceUID), int(command.Status))

    def answers(self) -> list[tuple[int, str, list[Event]]]:
        """(status, SOP Instance UID, what the answering thread did before) per C-STORE response."""
        found = []
        for index, (thread, event) in enumerate(self.events):
            if event[0] == "answer":
                before = [e for t, e in self.events[:index] if t == thread]
                found.append((event[2], event[1], before))
        return found


def _synced_rename(before: list[Event], target: str, folder: str) -> str | None:
    """Why the durable write of ``target`` (fsync temp, rename, fsync folder) is incomplete."""
    renames = [k for k, e in enumerate(before) if e[0] == "replace" and e[2] == target]
    if not renames:
        return f"answered before {target} was renamed into place"
    last = renames[-1]
    if ("fsync", before[last][1]) not in before[:last]:
        return f"{before[last][1]} renamed to {target} without an fsync"
    if ("fsync", folder) not in before[last + 1:]:
        return f"{folder} not fsync'd after the rename of {target}"
    return None


def _durability_problems(before: list[Event], spool: Path, series_uid: str, sop_uid: str) -> list[str]:
    incoming = os.path.realpath(spool / "incoming")
    folder = f"{incoming}/{series_uid}"
    problems = [_synced_rename(before, f"{folder}/{sop_uid}.dcm", folder),
                _synced_rename(before, f"{folder}/series.json", folder)]
    made = [k for k, e in enumerate(before) if e == ("mkdir", folder)]
    if not made or ("fsync", incoming) not in before[made[0] + 1:]:
        problems.append(f"series folder {folder} not made and fsync'd in incoming/")
    return [p for p in problems if p]


def _send_recorded(tmp_path, bundle, monkeypatch, recorder, sync):
    """Two new series over one association, every event recorded; the answers and datasets."""
    series = [mr_series(tmp_path / f"in{i}", 3, seed=f"durable-order-{i}") for i in range(2)]
    datasets = [pydicom.dcmread(path) for files in series for path in files]
    config = node_config(tmp_path, bundle, assembly={"quiet_s": 60}, spool={"sync": sync})
    with running_node(config) as node:
        node.scp.server.bind(evt.EVT_DIMSE_SENT, recorder.dimse_sent)
        recorder.install(monkeypatch)
        assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
        for ds in datasets:
            assert int(assoc.send_c_store(ds).Status) == 0
            recorder.add("ack received", str(ds.SOPInstanceUID))
        assoc.release()
        monkeypatch.undo()
    answers = recorder.answers()
    assert [(status, uid) for status, uid, _ in answers] == [(0, str(ds.SOPInstanceUID)) for ds in datasets]
    received = [e[1] for _, e in recorder.events if e[0] == "ack received"]
    assert received == [uid for _, uid, _ in answers]  # each ack reached the sender after its answer
    return answers, datasets


def test_ack_only_after_file_and_folder_synced(tmp_path, plumbing_bundle, monkeypatch):
    """``spool.sync: fsync``: the answering thread fsync'd file, rename and folders first."""
    recorder = Recorder()
    answers, datasets = _send_recorded(tmp_path, plumbing_bundle(), monkeypatch, recorder, "fsync")
    spool = Path(os.path.realpath(tmp_path / "spool"))
    for (_, uid, before), ds in zip(answers, datasets, strict=True):
        assert _durability_problems(before, spool, str(ds.SeriesInstanceUID), uid) == []


def _synced_after(events: list[Event], answer: int, made: list[int]) -> bool:
    """A syncfs started after every index in ``made`` and ended before ``answer``."""
    starts = {e[1]: k for k, e in enumerate(events) if e[0] == "syncfs start"}
    ends = {e[1]: k for k, e in enumerate(events) if e[0] == "syncfs end"}
    return any(start > max(made) and ends.get(n, answer) < answer for n, start in starts.items())


def test_ack_only_after_a_syncfs_that_began_after_the_rename(tmp_path, plumbing_bundle, monkeypatch):
    """``spool.sync: syncfs`` (default): the instance's rename, its series folder and
    series.json all happened before a syncfs (run by any thread) that ended before the answer."""
    recorder = Recorder()
    real_syncfs, rounds = spool_module.syncfs, iter(range(1_000_000))

    def syncfs(fd: int) -> None:
        n = next(rounds)
        recorder.add("syncfs start", n)
        real_syncfs(fd)
        recorder.add("syncfs end", n)

    monkeypatch.setattr(spool_module, "syncfs", syncfs)
    answers, datasets = _send_recorded(tmp_path, plumbing_bundle(), monkeypatch, recorder, "syncfs")
    events = [e for _, e in recorder.events]
    folder_of = {str(ds.SOPInstanceUID): os.path.realpath(tmp_path / "spool" / "incoming" / str(ds.SeriesInstanceUID))
                 for ds in datasets}
    for uid, folder in folder_of.items():
        answer = events.index(("answer", uid, 0))
        made = [k for k, e in enumerate(events[:answer]) if (e[0] == "replace" and e[2] in
                (f"{folder}/{uid}.dcm", f"{folder}/series.json")) or e == ("mkdir", folder)]
        assert len(made) >= 2, f"{uid} answered before its file and series.json were in place"
        assert _synced_after(events, answer, made), f"{uid} answered without a syncfs after its rename"


def test_group_sync_shares_one_round_among_callers_who_asked_meanwhile(tmp_path, monkeypatch):
    """Callers who ask while a syncfs runs wait for the next one (it started after they
    asked), and that one round serves them all."""
    gate, rounds_seen = threading.Event(), []
    real_syncfs = spool_module.syncfs

    def slow_syncfs(fd: int) -> None:
        gate.wait(30)
        real_syncfs(fd)

    monkeypatch.setattr(spool_module, "syncfs", slow_syncfs)
    group = spool_module.GroupSync(tmp_path)

    def caller() -> None:
        group.sync()
        rounds_seen.append(group.rounds)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    threads[0].start()
    wait_for(lambda: group._running, 10)
    for t in threads[1:]:
        t.start()
    wait_for(lambda: group._asked == 6, 10)
    gate.set()
    for t in threads:
        t.join(30)
    assert sorted(rounds_seen) == [1, 2, 2, 2, 2, 2]
    assert group.rounds == 2


def test_syncfs_failure_is_an_error():
    """A real failure (a descriptor that is not open) raises, naming syncfs."""
    with pytest.raises(OSError, match="syncfs failed"):
        spool_module.syncfs(-1)

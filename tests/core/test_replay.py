"""``dicomnode replay``: mixed folders, exact presentation contexts (recorded by a real SCP),
statuses, exit codes, results."""

from __future__ import annotations

import subprocess
import sys
import threading

import pydicom
from conftest import REPO, mr_series, node_config, running_node
from netutil import free_port, storage_scp
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from dicomnode.replay import scan


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomnode", "replay", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_replay_mixed_folder_waits_for_results(tmp_path, plumbing_bundle):
    a = mr_series(tmp_path / "in" / "a", 5, seed="ra")
    b = mr_series(tmp_path / "in" / "nested" / "b", 4, seed="rb")
    (tmp_path / "in" / "README.txt").write_text("not dicom")
    with running_node(node_config(tmp_path, plumbing_bundle())) as node:
        out = _replay(str(tmp_path / "in"), "--to", f"127.0.0.1:{node.port}", "--concurrency", "2",
                      "--wait-results", str(tmp_path / "outbox"), "--timeout", "120")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "9  0x0000 Success" in out.stdout
    assert "1 non-DICOM files skipped" in out.stderr
    for files in (a, b):
        uid = pydicom.dcmread(files[0]).SeriesInstanceUID
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith(uid))
        assert f"{len(files)} instances" in line


def test_replay_exit_code_when_refused(tmp_path, plumbing_bundle, testdata):
    ct = testdata / "seg-sr" / "highdicom" / "seg_image_ct_binary.dcm"  # not an accepted SOP class
    with running_node(node_config(tmp_path, plumbing_bundle())) as node:
        out = _replay(str(ct), "--to", f"127.0.0.1:{node.port}", "--quiet")
    assert out.returncode == 1
    assert "0x0122 Refused: SOP Class not supported" in out.stdout


def _own_context(path):
    """(SOP Instance UID, SOP Class UID, Transfer Syntax UID) as the file itself says."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.SOPInstanceUID), str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID)


def test_scan_reads_each_files_sop_class_and_syntax(testdata):
    files, skipped = scan([testdata / "seg-sr"])
    dicom = sorted((testdata / "seg-sr").rglob("*.dcm"))
    assert [f.path for f in files] == dicom
    assert [(f.sop_class, f.syntax) for f in files] == [_own_context(p)[1:] for p in dicom]
    assert skipped == [str(testdata / "seg-sr" / "siemens-syngo-via" / "ORIGINAL_README.txt")]


def test_replay_proposes_and_uses_exactly_each_files_context(tmp_path, testdata):
    """One association proposing one context per (SOP class, transfer syntax) present, each
    with only the file's own syntax (SEG, label-map SEG, SRs, JPEG-LS included); every
    instance is stored in its own context, never converted."""
    dicom = sorted((testdata / "seg-sr").rglob("*.dcm"))
    truth = [_own_context(p) for p in dicom]
    proposed, stored = [], []

    def requested(event):
        proposed.append(sorted((cx.abstract_syntax, tuple(cx.transfer_syntax))
                               for cx in event.assoc.requestor.requested_contexts))

    def store(event):
        stored.append((str(event.request.AffectedSOPInstanceUID), event.context.abstract_syntax,
                       event.context.transfer_syntax))
        return 0x0000

    ae = AE(ae_title="RECORDER")
    for sop_class in sorted({t[1] for t in truth}):
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_REQUESTED, requested), (evt.EVT_C_STORE, store)])
    try:
        out = _replay(str(testdata / "seg-sr"), "--to", f"127.0.0.1:{port}", "--called-aet", "RECORDER", "--quiet")
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(dicom)}  0x0000 Success" in out.stdout
    assert proposed == [sorted({(sop, (syntax,)) for _, sop, syntax in truth})]
    assert sorted(stored) == sorted(truth)


def test_serve_exits_when_its_http_port_is_taken(tmp_path, plumbing_bundle):
    import socket

    import yaml

    config = node_config(tmp_path, plumbing_bundle())
    port = yaml.safe_load(config.read_text())["http"]["port"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        out = subprocess.run([sys.executable, "-m", "dicomnode", "serve", "--config", str(config)],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2
    assert "cannot start" in out.stderr and "Address already in use" in out.stderr


def test_replay_associates_again_when_the_peer_drops_the_association(tmp_path):
    """A peer that aborts mid-series: replay re-associates, re-sends the unanswered
    instance (its own data set, not the one read ahead for the next C-STORE) and ends
    with every instance stored (exit 0)."""
    files = mr_series(tmp_path / "in", 6, seed="drop")
    stored: list[str] = []
    carried: list[tuple[str, str]] = []  # (C-STORE's Affected SOP Instance UID, its data set's)
    calls = {"n": 0}

    def handle(event):
        calls["n"] += 1
        if calls["n"] == 3:  # the third C-STORE: drop the association without answering
            aborted = threading.Event()

            def abort():  # blocking abort (A-ABORT sent, socket closed) off the reactor thread
                event.assoc.abort()
                aborted.set()

            threading.Thread(target=abort).start()
            assert aborted.wait(30), "A-ABORT not done in 30 s"  # the answer below goes nowhere
            return 0x0000
        stored.append(str(event.request.AffectedSOPInstanceUID))
        carried.append((stored[-1], str(event.dataset.SOPInstanceUID)))
        return 0x0000

    server, port = storage_scp("DROPPER", handle)
    try:
        out = _replay(str(tmp_path / "in"), "--to", f"127.0.0.1:{port}", "--called-aet", "DROPPER")
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "association dropped" in out.stderr and "associating again" in out.stderr
    assert "6  0x0000 Success" in out.stdout
    assert sorted(set(stored)) == sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files)
    assert all(command == data for command, data in carried), carried

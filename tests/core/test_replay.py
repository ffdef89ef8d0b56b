"""``dicomnode replay``: mixed folders, exact presentation contexts, statuses, exit codes, results."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pydicom
from conftest import REPO, mr_series, node_config, running_node

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


def test_scan_proposes_exact_contexts_incl_seg(testdata):
    files, skipped = scan([testdata / "seg-sr"])
    classes = {f.sop_class for f in files}
    assert "1.2.840.10008.5.1.4.1.1.66.4" in classes  # Segmentation Storage
    assert all(f.syntax for f in files)


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
    instance and ends with every instance stored (exit 0)."""
    from netutil import free_port
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt

    files = mr_series(tmp_path / "in", 6, seed="drop")
    stored: list[str] = []
    calls = {"n": 0}

    def handle(event):
        calls["n"] += 1
        if calls["n"] == 3:  # the third C-STORE: drop the association without answering
            threading.Thread(target=event.assoc.abort).start()
            time.sleep(1.0)
            return 0x0000
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="DROPPER")
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        out = _replay(str(tmp_path / "in"), "--to", f"127.0.0.1:{port}", "--called-aet", "DROPPER")
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "association dropped" in out.stderr and "associating again" in out.stderr
    assert "6  0x0000 Success" in out.stdout
    assert sorted(set(stored)) == sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files)

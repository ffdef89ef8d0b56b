"""No patient name, ID or birth date in the node's logs: the node process and its worker child.

``test_flow`` checks the in-process log records (``caplog``) of the plumbing pipeline.
Here a real ``dicomnode serve`` subprocess runs the ``mri-lln`` pipeline in its worker
child, whose stderr shares the node's log file; libraries (highdicom, pydicom) warn with
header values in that child: highdicom's ``The string "<PatientName>" is unlikely to
represent the intended person name`` for a single-component name, as on the real T2
series. The secrets are those of ``conftest.mr_series``, with the name in one component.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from conftest import MR_SOP, NodeProcess, node_config
from netutil import store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.log import configure_logging
from dicomnode.synth.mr import generate_case

DEMO = Path(__file__).resolve().parents[2] / "models" / "lln-t2-demo"
NAME, PATIENT_ID, BIRTH_DATE = "SECRETPATIENTNAME", "PID-SECRET-123", "19010203"
SECRETS = (NAME, "SECRET", PATIENT_ID, BIRTH_DATE)


def _secret_series(folder: Path) -> list[Path]:
    """A phantom series (with nodes: SEG and SR are built) carrying the secrets."""
    case = generate_case(21, n_nodes=3)
    for ds in case.datasets:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH_DATE
    return case.write(folder)


def _mri_config(tmp_path: Path) -> Path:
    route = {
        "name": "t2",
        "pipeline": "mri-lln",
        "model": "lln-t2-demo",
        "destinations": ["outbox"],
        "settings": {"device": "cpu", "threads": 1},
        "match": {"all": [{"tag": "Modality", "equals": "MR"}]},
    }
    return node_config(
        tmp_path,
        DEMO,
        models={"lln-t2-demo": {"path": str(DEMO)}},
        routes=[route],
        assembly={"quiet_s": 1.0, "max_wait_s": 120},
    )


def _send(port: int, files: list[Path]) -> None:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert [int(assoc.send_c_store(f).Status) for f in files] == [0] * len(files)
    assoc.release()


@pytest.mark.serial
def test_worker_child_log_has_no_phi(tmp_path: Path) -> None:
    files = _secret_series(tmp_path / "in")
    log_path = tmp_path / "node.log"
    node = NodeProcess(_mri_config(tmp_path), log_path).start()
    try:
        _send(node.port, files)
        result = wait_for(lambda: next((tmp_path / "outbox").glob("*/*/mri-lln/result.json"), None), timeout=300)
    finally:
        node.stop()
    assert json.loads(result.read_text())["findings"]["n_nodes"] >= 1  # the child ran the whole pipeline
    text = log_path.read_text()
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in the node log"
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    child = [e for e in entries if e.get("series_uid") == series_uid and e["logger"].startswith("dicomnode.pipelines")]
    assert child, "the worker child's lines are not in the log"
    # highdicom did warn about the name (SEG and SR), through logging and without the value
    warned = [e for e in entries if e["logger"] == "py.warnings"]
    assert any(e["msg"].startswith('UserWarning: The string "<redacted>" is unlikely') for e in warned), warned


@pytest.fixture
def node_logging():
    """``configure_logging`` as the CLI calls it; root handlers and showwarning restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, warnings.showwarning)
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", stream)
        configure_logging("json", "INFO")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                yield stream
        finally:
            root.handlers[:], root.level, warnings.showwarning = saved[0], saved[1], saved[2]


def test_library_warnings_and_log_lines_withhold_header_values(node_logging: io.StringIO) -> None:
    from highdicom.valuerep import check_person_name

    check_person_name(NAME)  # highdicom: UserWarning quoting the name
    logging.getLogger("pydicom").warning("Invalid value for VR DA: %r.", BIRTH_DATE)
    logging.getLogger("dicomnode.test").info("series %s: 'own line' kept", "1.2.3")
    lines = [json.loads(line) for line in node_logging.getvalue().splitlines()]
    assert [entry["logger"] for entry in lines] == ["py.warnings", "pydicom", "dicomnode.test"]
    assert lines[0]["msg"].startswith('UserWarning: The string "<redacted>" is unlikely to represent')
    assert lines[1]["msg"] == "Invalid value for VR DA: '<redacted>'."
    assert lines[2]["msg"] == "series 1.2.3: 'own line' kept"  # dicomnode's lines are not rewritten
    for secret in SECRETS:
        assert secret not in node_logging.getvalue()

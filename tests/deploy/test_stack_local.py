"""The demo stack's wiring, run without containers: Orthanc (Debian) + the node on loopback.

Orthanc runs with docker/orthanc/orthanc.json and its Lua forwarding rule, the node with
docker/config/compose.yaml; only host names, ports and folders are changed (compose
service names become 127.0.0.1). A synthetic T2 study is sent to Orthanc, Orthanc forwards
it to the node, the node sends SEG + SR back, and the test finds them through Orthanc's
DICOMweb (QIDO-RS), the way OHIF reads them. Needs a private network namespace (Orthanc
binds all interfaces): ``make test`` runs pytest under ``unshare -n``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from netutil import free_port
from orthanc import netns_skip

from .conftest import DOCKER, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, netns_skip()]
CLI = Path(sys.executable).parent / "dicomnode"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ports = {k: free_port() for k in ("o_http", "o_dicom", "n_dicom", "n_http")}

    orthanc = json.loads((DOCKER / "orthanc" / "orthanc.json").read_text())
    lua = orthanc["LuaScripts"][0]
    orthanc.update(StorageDirectory=str(tmp_path / "orthanc"), IndexDirectory=str(tmp_path / "orthanc"),
                   HttpPort=ports["o_http"], DicomPort=ports["o_dicom"], Plugins=[str(PLUGIN)],
                   LuaScripts=[str(DOCKER / "orthanc" / Path(lua).name)])
    ae, _host, _port = orthanc["DicomModalities"]["dicomnode"]
    orthanc["DicomModalities"]["dicomnode"] = [ae, "127.0.0.1", ports["n_dicom"]]
    (tmp_path / "orthanc.json").write_text(json.dumps(orthanc))

    text = (DOCKER / "config" / "compose.yaml").read_text()
    text = text.replace("/models/", f"{ROOT}/models/").replace("/spool", f"{tmp_path}/spool")
    node = yaml.safe_load(text)
    node["node"]["port"], node["http"]["port"] = ports["n_dicom"], ports["n_http"]
    node["destinations"]["orthanc"].update(host="127.0.0.1", port=ports["o_dicom"])
    node["assembly"]["quiet_s"] = 3
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(node))

    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("orthanc", "node")}
    procs = [subprocess.Popen([shutil.which("Orthanc") or "/usr/sbin/Orthanc", str(tmp_path / "orthanc.json")],
                              stdout=logs["orthanc"], stderr=subprocess.STDOUT),
             subprocess.Popen([str(CLI), "serve", "--config", str(tmp_path / "node.yaml")],
                              stdout=logs["node"], stderr=subprocess.STDOUT)]
    try:
        _wait(lambda: _get(f"http://127.0.0.1:{ports['o_http']}/system"), 60, "Orthanc up")
        _wait(lambda: _get(f"http://127.0.0.1:{ports['n_http']}/healthz"), 120, "node up")
        yield {"ports": ports, "tmp": tmp_path}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        for log in logs.values():
            log.close()
        for name in ("orthanc", "node"):
            print(f"--- {name}.log (tail)\n" + (tmp_path / f"{name}.log").read_text()[-3000:])


def test_study_sent_to_orthanc_comes_back_with_seg_and_sr(stack: dict[str, Any]) -> None:
    ports, tmp = stack["ports"], stack["tmp"]
    study_dir = tmp / "study"
    from dicomnode.synth.mr import generate_case

    generate_case(11).write(study_dir)
    first = next(p for p in sorted(study_dir.rglob("*")) if p.is_file())
    study_uid = pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID
    proc = subprocess.run([str(CLI), "replay", str(study_dir), "--to", f"127.0.0.1:{ports['o_dicom']}",
                           "--called-aet", "ORTHANC", "--quiet"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    qido = f"http://127.0.0.1:{ports['o_http']}/dicom-web/studies/{study_uid}/series"

    outbox = tmp / "spool" / "outbox"

    def modalities() -> set[str] | None:
        errors = list(outbox.glob("*/*/*/error.json"))
        assert not errors, f"node job failed: {errors[0].read_text()}"
        for result in outbox.glob("*/*/*/result.json"):  # done: a SEG must be among the outputs
            record = json.loads(result.read_text())
            assert any(name.startswith("SEG") for name in record["outputs"]), (
                f"job done without a SEG: outputs {record['outputs']}, "
                f"{record['findings'].get('n_nodes')} nodes found by {record['model']}")
        found = {s["00080060"]["Value"][0] for s in _get(qido) or []}
        return found if {"SEG", "SR"} <= found else None

    found = _wait(modalities, 400, f"SEG + SR of study {study_uid} in Orthanc (QIDO {qido})")
    assert found >= {"MR", "SEG", "SR"}

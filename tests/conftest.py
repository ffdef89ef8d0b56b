"""Shared fixtures: test data location, synthetic MR series, node configs, running nodes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).parent))

import orthanc  # noqa: E402
from netutil import free_port, wait_for  # noqa: E402

#: The browser check (OHIF + Chromium, ~1 min plus its own npm/apt set-up) is its own target,
#: `make test-viewer`, which sets DICOMNODE_VIEWER_TEST=1; `make test` does not collect it.
collect_ignore = [] if os.environ.get("DICOMNODE_VIEWER_TEST") == "1" else ["viewer"]

pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE


def pytest_configure(config: pytest.Config) -> None:
    """Run the session in a private network namespace, as ``make test`` does with ``unshare -n``:
    Orthanc binds all interfaces, and every test talks over loopback only."""
    orthanc.NETNS_PROBLEM = orthanc.enter_private_netns()

REPO = Path(__file__).resolve().parents[1]
#: The shared real-DICOM test data: the repository's sibling ``shared/testdata``, or the
#: folder named by ``DICOMNODE_TESTDATA`` (a run can point it elsewhere, or at a missing
#: folder to check that only the tests that read the data skip).
TESTDATA = Path(os.environ.get("DICOMNODE_TESTDATA") or REPO.parent / "shared" / "testdata")
MR_SOP = "1.2.840.10008.5.1.4.1.1.4"


def _data_folder(path: Path) -> Path:
    """``path`` if it is a folder, else skip the requesting test with a reason naming it."""
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (the repository's sibling 'shared/testdata', "
                    "or DICOMNODE_TESTDATA)")
    return path


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared real-DICOM test data (see ``TESTDATA``); skips the test, naming the path,
    when it is absent. Tests read the shared data only through this fixture."""
    return _data_folder(TESTDATA)


@pytest.fixture(scope="session")
def wsi_dir(testdata: Path) -> Path:
    """The real VL WSI slides of the shared test data (``testdata/wsi``)."""
    return _data_folder(testdata / "wsi")


@pytest.fixture(scope="session")
def mr_dir(testdata: Path) -> Path:
    """The real MR series of the shared test data (``testdata/mr``)."""
    return _data_folder(testdata / "mr")


def mr_series(folder: Path, n: int, *, seed: str = "s", description: str = "AX T2 TSE PELVIS",
              images_in_acquisition: bool = False, study_uid: str | None = None) -> list[Path]:
    """Write ``n`` MR instances of one new series (pydicom's MR_small, stepped positions)."""
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    study = study_uid or generate_uid(entropy_srcs=[seed, "study"])
    series = generate_uid(entropy_srcs=[seed, "series"])
    paths = []
    for i in range(n):
        ds = base.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesDescription, ds.InstanceNumber = description, i + 1
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "SECRET^PATIENTNAME", "PID-SECRET-123", "19010203"
        ds.ImagePositionPatient = [0.0, 0.0, float(i) * 5.0]
        if images_in_acquisition:
            ds.ImagesInAcquisition = n
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def plumbing_bundle(tmp_path: Path) -> Callable[..., Path]:
    """Make a model bundle for the test-only plumbing pipeline (real file + sha256)."""
    def make(**extra: Any) -> Path:
        root = tmp_path / f"bundle-{len(list(tmp_path.glob('bundle-*')))}"
        root.mkdir()
        params = root / "params.json"
        params.write_text('{"what": "plumbing test parameters"}')
        manifest = {"id": "plumbing", "version": "1", "task": "plumbing", "backend": "python",
                    "intended_use": "tests only", "files": [
                        {"path": "params.json", "sha256": hashlib.sha256(params.read_bytes()).hexdigest()}],
                    **extra}
        (root / "model.yaml").write_text(yaml.safe_dump(manifest))
        return root
    return make


def node_config(tmp_path: Path, bundle: Path, *, destinations: dict[str, Any] | None = None,
                **sections: Any) -> Path:
    """Write a node config routing every MR series to the plumbing pipeline."""
    dests = destinations or {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")}}
    data: dict[str, Any] = {
        "node": {"port": free_port(), "allow": [{"ae_title": "*", "network": "127.0.0.0/8"}]},
        "spool": {"path": str(tmp_path / "spool"), "min_free_mb": 1},
        "assembly": {"quiet_s": 1.5, "max_wait_s": 120},
        "models": {"plumbing": {"path": str(bundle)}},
        "destinations": dests,
        "dispatch": {"max_attempts": 3, "backoff_s": 0.3, "backoff_max_s": 2},
        "routes": [{"name": "mr", "pipeline": "plumbing:create", "model": "plumbing",
                    "destinations": list(dests), "match": {"all": [{"tag": "Modality", "equals": "MR"}]}}],
        "http": {"port": free_port()},
        "log": {"format": "json", "level": "INFO"},
    }
    for key, value in sections.items():
        replace = key in ("models", "routes")
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) and not replace else value
    path = tmp_path / "dicomnode.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextmanager
def running_node(config_path: Path) -> Iterator[Any]:
    """An in-process node (threads + worker child process), shut down afterwards."""
    from dicomnode.config import load_config
    from dicomnode.node import Node

    node = Node(load_config(config_path, env={}))
    try:
        node.start()
        yield node
    finally:
        node.shutdown(5)


class NodeProcess:
    """``python -m dicomnode serve`` as a real subprocess (for kill -9 tests)."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path, self.log_path = config_path, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = yaml.safe_load(config_path.read_text())["node"]["port"]

    def start(self) -> NodeProcess:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config",
                                          str(self.config_path), "--drain-timeout", "5"],
                                         stdout=log, stderr=log, env=env, cwd=REPO)
        wait_for(self._listening, timeout=60)
        return self

    def _listening(self) -> bool:
        from dicomnode.net.scu import echo
        assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()[-3000:]
        try:
            return echo("127.0.0.1", self.port, timeout_s=2) == 0
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        return self.proc.wait(30)

"""docker/compose.yaml: validated by compose tooling, and wired consistently.

Two validators: ``docker-compose config`` (Debian's docker-compose 1.29, which checks the
file against the Compose Specification JSON schema) and ``podman-compose config``
(PyPI ``podman-compose``, the tool that runs the stack on podman hosts). The wiring tests
check that the node, Orthanc and OHIF point at each other with the same AE titles, host
names and ports, so ``docker compose up`` gives a working demo.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .conftest import DOCKER, ROOT

COMPOSE = DOCKER / "compose.yaml"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _node_config() -> dict[str, Any]:
    command = _compose()["services"]["dicomnode"]["command"]
    container_path = command[command.index("--config") + 1]
    assert container_path.startswith("/config/")
    return yaml.safe_load((DOCKER / "config" / container_path.removeprefix("/config/")).read_text())


def _orthanc() -> dict[str, Any]:
    return json.loads((DOCKER / "orthanc" / "orthanc.json").read_text(encoding="utf-8"))


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found is not None, f"{name} not installed: `make deps` / `make venv` install docker-compose / podman-compose"
    return found


def test_docker_compose_schema_validation() -> None:
    tool = _tool("docker-compose")
    proc = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], cwd=DOCKER,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator is real: a typo in a service key fails it."""
    tool = _tool("docker-compose")
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text()
    broken.write_text(text.replace("restart: unless-stopped", "restrt: unless-stopped", 1))
    proc = subprocess.run([tool, "-f", str(broken), "config", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "restrt" in proc.stderr


def test_podman_compose_config() -> None:
    """``--dry-run``: renders and validates without a podman engine (CI has none)."""
    tool = _tool("podman-compose")
    proc = subprocess.run([tool, "--dry-run", "-f", str(COMPOSE), "config"], cwd=DOCKER,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    assert set(rendered["services"]) == {"dicomnode", "orthanc", "ohif", "slim"}


def test_bind_mount_sources_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", source)
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: mount source {source} missing"


def test_node_is_hardened_in_compose() -> None:
    node = _compose()["services"]["dicomnode"]
    mounts = node["volumes"]
    assert any(v.endswith(":/config:ro") for v in mounts)
    assert any(v.endswith(":/models:ro") for v in mounts)
    assert any(v.split(":")[1] == "/spool" for v in mounts)
    assert node["stop_signal"] == "SIGTERM"
    assert int(node["stop_grace_period"].rstrip("s")) >= 30
    # metrics/health stay on the host, DICOM is published
    assert "127.0.0.1:8080:8080" in node["ports"]


def test_orthanc_forwards_to_the_node() -> None:
    node_cfg = _node_config()
    orthanc = _orthanc()
    ae, host, port = orthanc["DicomModalities"]["dicomnode"]
    assert ae == node_cfg["node"]["ae_title"]
    assert host == "dicomnode" and host in _compose()["services"]
    assert port == node_cfg["node"]["port"]
    assert f"{port}:{port}" in _compose()["services"]["dicomnode"]["ports"]
    lua_mounts = [v for v in _compose()["services"]["orthanc"]["volumes"] if v.endswith(".lua:ro")]
    assert [v.split(":")[1] for v in lua_mounts] == orthanc["LuaScripts"]
    lua = (DOCKER / lua_mounts[0].split(":")[0]).read_text()
    assert "RestApiPost('/modalities/dicomnode/store', seriesId)" in lua
    assert orthanc["UnknownSopClassAccepted"] is True  # label-map SEG over DIMSE
    assert orthanc["DicomWeb"]["Enable"] is True


def test_node_sends_results_to_orthanc() -> None:
    node_cfg = _node_config()
    orthanc = _orthanc()
    dest = node_cfg["destinations"]["orthanc"]
    assert dest["type"] == "dimse"
    assert (dest["ae_title"], dest["host"], dest["port"]) == (
        orthanc["DicomAet"], "orthanc", orthanc["DicomPort"])
    for route in node_cfg["routes"]:
        assert "orthanc" in route["destinations"], route["name"]


def test_ohif_reads_orthanc_dicomweb_through_its_proxy() -> None:
    template = (DOCKER / "ohif" / "default.conf.template").read_text()
    proxy = r"location /dicom-web/ \{\s*proxy_pass http://orthanc:8042/dicom-web/;"
    assert re.search(proxy, template)
    assert "listen ${PORT}" in template
    app_config = (DOCKER / "ohif" / "app-config.js").read_text()
    for key in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
        assert re.search(rf"{key}: '/dicom-web'", app_config), key


def test_node_configs_pass_check_config(tmp_path: Path) -> None:
    """The configs the images and the stack use are accepted by the node itself.

    Container paths (/models, /spool) are mapped to the checkout and a temporary folder;
    the smoke test (make test-image) checks them again inside the image.
    """
    cli = Path(sys.executable).parent / "dicomnode"
    demo_models = all((ROOT / "models" / m / "model.yaml").is_file()
                      for m in ("lln-t2-demo", "wsi-ln-demo"))
    for path in (DOCKER / "config" / "dicomnode.yaml", DOCKER / "config" / "compose.yaml"):
        text = path.read_text(encoding="utf-8").replace("/models/", f"{ROOT}/models/")
        local = tmp_path / path.name
        local.write_text(text.replace("/spool", f"{tmp_path}/spool"), encoding="utf-8")
        proc = subprocess.run([str(cli), "check-config", str(local)], capture_output=True,
                              text=True, timeout=300)
        if demo_models:
            assert proc.returncode == 0, f"{path}: {proc.stdout}\n{proc.stderr}"
        else:  # valid keys; only the demo bundles are not in this checkout yet
            assert "config valid" in proc.stdout, f"{path}: {proc.stdout}\n{proc.stderr}"

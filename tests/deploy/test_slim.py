"""The Slim slide viewer of the demo stack (docker/compose.yaml, service ``slim``) is wired
to the demo Orthanc and styles the node's deposit outlines (issue 14).

Docker cannot run here; these are static checks of the files the service mounts: Slim's
nginx site proxies ``/dicomweb/`` to Orthanc's DICOMweb, Slim's runtime config points its
one server at that path on its own origin, the mounts land where the Slim image reads them,
the image is built from a pinned release, and the annotation style names the finding and
category codes the node's WSI SR writes. The browser check of what Slim's engine shows of
our outputs is tests/viewer/test_microscopy.py (``make test-viewer``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydicom.sr.codedict import codes

from .conftest import DOCKER

SLIM = DOCKER / "slim"


def _service() -> dict[str, Any]:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    return compose["services"]["slim"]


def _mounts() -> dict[str, str]:
    """Container path → host path of the service's bind mounts."""
    out = {}
    for volume in _service()["volumes"]:
        host, container, *_ = volume.split(":")
        out[container] = host
    return out


def test_slim_is_built_from_a_pinned_release_and_published() -> None:
    build = _service()["build"]
    assert re.fullmatch(r"https://github\.com/ImagingDataCommons/slim\.git#v\d+\.\d+\.\d+", build["context"])
    assert build["target"] == "app"  # the nginx stage of Slim's Dockerfile
    assert "8008:8008" in _service()["ports"]
    assert "orthanc" in _service()["depends_on"]


def test_slim_mounts_its_config_and_site_where_the_image_reads_them() -> None:
    mounts = _mounts()
    assert mounts["/var/www/html/config/default.js"] == "./slim/default.js"  # loaded by Slim's index.html
    assert mounts["/etc/nginx/conf.d/local.conf"] == "./slim/slim.conf"  # replaces the image's site
    for host in mounts.values():
        assert (DOCKER / host).is_file(), host


def test_slim_reads_orthanc_dicomweb_through_its_own_origin() -> None:
    site = (SLIM / "slim.conf").read_text()
    assert re.search(r"listen 8008;", site)  # the published container port
    proxy = re.search(r"location (/\w+/) \{\s*proxy_pass http://orthanc:8042/dicom-web/;", site)
    assert proxy, "no DICOMweb proxy to Orthanc"
    config = (SLIM / "default.js").read_text()
    servers = re.findall(r"url: window\.location\.origin \+ '([^']+)'", config)
    assert servers == [proxy.group(1).rstrip("/")], (servers, proxy.group(1))
    assert re.search(r"write: false", config)  # the demo stores nothing back
    orthanc = yaml.safe_load((DOCKER / "orthanc" / "orthanc.json").read_text())
    assert orthanc["DicomWeb"]["Enable"] is True and orthanc["HttpPort"] == 8042


def test_slim_styles_the_deposit_outlines_the_node_writes() -> None:
    config = (SLIM / "default.js").read_text()
    finding = re.search(r"finding: \{ value: '(\d+)', schemeDesignator: '(\w+)'", config)
    category = re.search(r"findingCategory: \{ value: '(\d+)', schemeDesignator: '(\w+)'", config)
    assert finding and category
    # what dicomnode/pipelines/wsi_two_stage/sr.py puts in each deposit group
    assert finding.groups() == (codes.cid7159.NeoplasmSecondary.value, "SCT")
    assert category.groups() == (codes.SCT.MorphologicallyAbnormalStructure.value, "SCT")

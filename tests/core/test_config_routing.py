"""Config validation (every error names key, value, fix), routing rules, rules-test CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from dicomnode.config import load_config
from dicomnode.errors import ConfigError, RoutingError
from dicomnode.routing import compile_rule, first_match


def _load(tmp_path, data, env=None):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, env=env or {})


def test_embedded_defaults_route_wsi_and_t2():
    config = load_config(env={})
    assert config.node.port == 11112 and config.node.ae_title == "DICOMNODE"
    assert [r.name for r in config.routes] == ["wsi", "t2-pelvis"]
    assert [str(a) for a in config.node.allow] == ["*@127.0.0.0/8"]


@pytest.mark.parametrize(("data", "key", "fix"), [
    ({"node": {"port": 70000}}, "node.port", "1–65535"),
    ({"node": {"prot": 1}}, "node.prot", "did you mean 'port'"),
    ({"nodes": {}}, "nodes", "did you mean 'node'"),
    ({"node": {"ae_title": "WAY_TOO_LONG_AE_TITLE"}}, "node.ae_title", "1–16"),
    ({"node": {"allow": [{"network": "10.0.0.300/8"}]}}, "node.allow[0].network", "CIDR"),
    ({"node": {"tls": {"enabled": True}}}, "node.tls.cert", "PEM"),
    ({"assembly": {"quiet_s": -1}}, "assembly.quiet_s", "greater than 0"),
    ({"destinations": {"p": {"type": "ftp"}}}, "destinations.p.type", "folder, dimse or stow"),
    ({"routes": [{"name": "r", "pipeline": "mri-lln", "model": "nope", "destinations": [], "match": {}}]},
     "routes[0].model", "not in 'models'"),
    ({"routes": [{"name": "r", "pipeline": "mri-lln", "model": "lln-t2-demo", "destinations": ["outbox"],
                  "match": {"tag": "Modalty", "equals": "MR"}}]}, "routes[0].match", "DICOM keyword"),
    ({"worker": {"device": "tpu"}}, "worker.device", "auto, cpu, cuda"),
])
def test_config_errors_name_key_value_and_fix(tmp_path, data, key, fix):
    with pytest.raises(ConfigError, match=fix) as info:
        _load(tmp_path, data)
    assert info.value.key == key
    assert key in str(info.value)


def test_precedence_defaults_file_env_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"node": {"port": 11200}}))
    assert load_config(path, env={}).node.port == 11200
    assert load_config(path, env={"DICOMNODE_NODE__PORT": "11300"}).node.port == 11300
    config = load_config(path, env={"DICOMNODE_NODE__PORT": "11300"}, overrides={"node.port": 11400})
    assert config.node.port == 11400 and config.sources == ("defaults", str(path), "env", "cli")


@pytest.mark.parametrize(("rule", "headers", "expected"), [
    ({"tag": "Modality", "equals": "MR"}, {"Modality": "MR"}, True),
    ({"tag": "Modality", "not_equals": "MR"}, {"Modality": "MR"}, False),
    ({"tag": "SeriesDescription", "regex": "(?i)t2"}, {"SeriesDescription": "AX T2 TSE"}, True),
    ({"tag": "Modality", "in": ["MR", "CT"]}, {"Modality": "CT"}, True),
    ({"tag": "Modality", "not_in": ["MR", "CT"]}, {"Modality": "CT"}, False),
    ({"tag": "MagneticFieldStrength", "range": [1.4, 3.1]}, {"MagneticFieldStrength": 3.0}, True),
    ({"tag": "MagneticFieldStrength", "range": [None, 1.0]}, {"MagneticFieldStrength": 3.0}, False),
    ({"tag": "BodyPartExamined", "exists": True}, {}, False),
    ({"tag": "BodyPartExamined", "exists": False}, {}, True),
    ({"tag": "ImageType", "equals": "AXIAL"}, {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}, True),
    ({"any": [{"tag": "Modality", "equals": "CT"}, {"all": [{"tag": "Modality", "equals": "MR"},
              {"tag": "SeriesDescription", "regex": "T2"}]}]}, {"Modality": "MR", "SeriesDescription": "T2"}, True),
])
def test_rule_operators(rule, headers, expected):
    assert compile_rule(rule).evaluate(headers)[0] is expected


@pytest.mark.parametrize(("rule", "message"), [
    ({"tag": "Modality"}, "exactly one operator"),
    ({"tag": "Modality", "regex": "("}, "bad regex"),
    ({"tag": "Modality", "in": "MR"}, "needs a list"),
    ({"all": []}, "non-empty list"),
    ({"tag": "Modality", "range": [1]}, r"\[min, max\]"),
])
def test_bad_rules_are_refused(rule, message):
    with pytest.raises(RoutingError, match=message):
        compile_rule(rule)


def test_first_match_wins_and_explains():
    config = load_config(env={})
    route, trace = first_match(config.routes, {"Modality": "MR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
                                               "SeriesDescription": "AXIAL T2 COVER PROSTATE"})
    assert route.name == "t2-pelvis"
    assert trace[0][0] == "wsi" and not trace[0][1] and "fails equals" in trace[0][2]


def test_rules_test_cli_on_real_files(testdata):
    t2 = next((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    adc = next((testdata / "mr" / "prostate-adc-oblique-ge-qin").glob("*.dcm"))
    wsi = testdata / "wsi" / "cmu1-small-region-pyramid-wsi2dcm" / "level-0-frames-0-30.dcm"
    out = subprocess.run([sys.executable, "-m", "dicomnode", "rules", "test", str(t2), str(adc), str(wsi)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    blocks = out.stdout.split(str(adc))
    assert "→ t2-pelvis (mri-lln)" in blocks[0]
    assert "no route matched" in blocks[1].split(str(wsi))[0]
    assert "→ wsi (wsi-two-stage)" in out.stdout.split(str(wsi))[1]


def test_check_config_reports_broken_bundle(tmp_path):
    bad = tmp_path / "bundle"
    bad.mkdir()
    (bad / "model.yaml").write_text(yaml.safe_dump({"id": "x", "version": "1", "task": "mri-lln",
                                    "backend": "nnunetv2", "intended_use": "t", "files": [
                                        {"path": "w.pth", "sha256": "0" * 64}]}))
    (bad / "w.pth").write_bytes(b"tampered")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": {"lln-t2-demo": {"path": str(bad)}}}))
    out = subprocess.run([sys.executable, "-m", "dicomnode", "check-config", str(path)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1
    assert "w.pth: sha256" in out.stderr and "does not match manifest" in out.stderr


def test_route_settings_reach_the_worker_request(tmp_path):
    from dicomnode.jobs import new_job
    from dicomnode.jobstore import FileJobStore
    from dicomnode.metrics import Metrics
    from dicomnode.spool import Spool
    from dicomnode.worker import Worker

    routes = [{"name": "wsi-dense", "pipeline": "wsi-two-stage", "model": "wsi-ln-demo", "destinations": ["outbox"],
               "settings": {"dense": True}, "match": {"tag": "Modality", "equals": "SM"}}]
    config = _load(tmp_path, {"routes": routes, "spool": {"path": str(tmp_path / "spool")}})
    worker = Worker(config, FileJobStore(Spool(config.spool.path)), Metrics(), lambda job_id: None)
    job = new_job("j1", route="wsi-dense", pipeline="wsi-two-stage", model="wsi-ln-demo", model_path="m",
                  model_version="1", study_uid="1", series_uid="2", instances=1, destinations=["outbox"], created=0)
    request = worker._request(job)
    assert request.settings == {"providers": list(config.worker.onnx_providers), "dense": True}


@pytest.mark.parametrize(("find", "replace", "named"), [
    ("  orientation: LPS", "  orientation: LPX", "input.orientation 'LPX' is not an axis code"),
    ("min_node_volume_mm3: 14.0", "min_node_volume_mm3: -1", "min_node_volume_mm3 -1 must be a number >= 0"),
])
def test_check_config_reports_a_bad_mri_bundle_setting(tmp_path, find, replace, named):
    """A bundle setting the pipeline reads (orientation, thresholds) is checked at start,
    naming the key, not only when the worker creates the pipeline."""
    bundle = tmp_path / "lln"
    shutil.copytree(REPO / "models" / "lln-t2-demo", bundle)
    text = (bundle / "model.yaml").read_text()
    assert find in text
    (bundle / "model.yaml").write_text(text.replace(find, replace))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": {"lln-t2-demo": {"path": str(bundle)}}}))
    out = subprocess.run([sys.executable, "-m", "dicomnode", "check-config", str(path)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert named in out.stderr

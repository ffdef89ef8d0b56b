"""Model bundle manifests (``models/<id>/model.yaml``).

A bundle is a folder with a ``model.yaml`` manifest, the model files it lists (each with
its sha256) and a ``MODEL_CARD.md``. The node refuses a bundle whose manifest is malformed
or whose files are missing or differ from their recorded hashes, and says which.

Backend-specific sections (``input``, ``labels``, ``thresholds``) are kept as plain
mappings here; each pipeline validates the keys it needs. ``requirements`` (what inputs
the model was made for) is parsed strictly by :mod:`dicomnode.inference.requirements`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dicomnode.errors import ModelError
from dicomnode.inference.requirements import Requirements, parse_requirements

__all__ = ["BACKENDS", "ModelBundle", "load_bundle", "sha256_file"]

BACKENDS = ("nnunetv2", "onnx", "python")
_REQUIRED = ("id", "version", "task", "backend", "files", "intended_use")


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelBundle:
    """A verified model bundle.

    Attributes
    ----------
    root
        The bundle folder.
    id, version, task, backend
        Identity and kind of the model (``task`` names the pipeline it serves).
    files
        Relative path → sha256, all verified at load time.
    input, labels, thresholds
        Backend/pipeline specific sections of the manifest.
    intended_use
        Free text from the manifest.
    not_for_clinical_use
        When true every output says "not for clinical use".
    requirements
        The inputs the model was made for (``None``: the bundle declares none).
    """

    root: Path
    id: str
    version: str
    task: str
    backend: str
    files: Mapping[str, str]
    intended_use: str
    not_for_clinical_use: bool = True
    input: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[Any, Any] = field(default_factory=dict)
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    requirements: Requirements | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def path(self, relative: str) -> Path:
        """Absolute path of a file listed in the manifest."""
        if relative not in self.files:
            raise ModelError(
                f"model '{self.id}': file '{relative}' is not listed in {self.root}/model.yaml"
            )
        return self.root / relative


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest = root / "model.yaml"
    if not manifest.is_file():
        raise ModelError(f"model bundle {root}: no model.yaml (expected {manifest})")
    try:
        data = yaml.safe_load(manifest.read_text())
    except yaml.YAMLError as exc:
        raise ModelError(f"{manifest}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{manifest}: must be a mapping of keys, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelError(f"{manifest}: missing required key(s) {', '.join(missing)}")
    if not isinstance(data["task"], str) or not data["task"]:
        raise ModelError(f"{manifest}: task must name the pipeline the bundle is for (see models/README.md)")
    if data["backend"] not in BACKENDS:
        raise ModelError(f"{manifest}: backend {data['backend']!r} unknown; use one of {BACKENDS}")
    return data


def _verify_files(root: Path, files: Any, verify: bool) -> dict[str, str]:
    if not isinstance(files, list) or not files:
        raise ModelError(f"{root}/model.yaml: 'files' must be a non-empty list of {{path, sha256}}")
    checked: dict[str, str] = {}
    problems: list[str] = []
    for entry in files:
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            raise ModelError(f"{root}/model.yaml: files entry {entry!r} needs 'path' and 'sha256'")
        rel, want = str(entry["path"]), str(entry["sha256"]).lower()
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            problems.append(f"{rel}: path leaves the bundle folder")
        elif not target.is_file():
            problems.append(f"{rel}: file missing")
        elif verify and (got := sha256_file(target)) != want:
            problems.append(f"{rel}: sha256 {got} does not match manifest {want}")
        checked[rel] = want
    if problems:
        raise ModelError(f"model bundle {root} refused: " + "; ".join(problems))
    return checked


def _plans_spacing(root: Path, data: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """The nnU-Net plans' target spacing of the bundle's configuration, if it has one."""
    section = data.get("input") or {}
    if data["backend"] != "nnunetv2" or not isinstance(section, dict):
        return None
    plans = root / str(section.get("model_folder", ".")) / "plans.json"
    try:
        spacing = json.loads(plans.read_text())["configurations"][str(section.get("configuration"))]["spacing"]
        return float(spacing[0]), float(spacing[1]), float(spacing[2])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def load_bundle(root: Path | str, *, verify: bool = True) -> ModelBundle:
    """Load and verify a model bundle.

    Parameters
    ----------
    root
        Bundle folder containing ``model.yaml``.
    verify
        Check every file's sha256 (always on in the node; off only for tooling that
        rewrites hashes).

    Raises
    ------
    ModelError
        The manifest is missing or malformed, or a file is missing or fails its hash; the
        message names the file.
    """
    root = Path(root)
    data = _read_manifest(root)
    files = _verify_files(root, data["files"], verify)
    known = set(_REQUIRED) | {"not_for_clinical_use", "input", "labels", "thresholds", "requirements"}
    requirements = parse_requirements(data.get("requirements"), f"{root}/model.yaml", _plans_spacing(root, data))
    return ModelBundle(
        root=root,
        id=str(data["id"]),
        version=str(data["version"]),
        task=str(data["task"]),
        backend=str(data["backend"]),
        files=files,
        intended_use=str(data["intended_use"]),
        not_for_clinical_use=bool(data.get("not_for_clinical_use", True)),
        input=dict(data.get("input") or {}),
        labels=dict(data.get("labels") or {}),
        thresholds=dict(data.get("thresholds") or {}),
        requirements=requirements,
        extra={k: v for k, v in data.items() if k not in known},
    )

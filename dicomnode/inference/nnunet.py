"""Adapter over nnU-Net v2's ``nnUNetPredictor`` for ``backend: nnunetv2`` bundles.

The runner is built once per worker (the model is loaded once and kept warm) and called
once per volume. It fixes nnU-Net's contract in one place:

* the input is a ``(z, y, x)`` array with spacing ``(z, y, x)`` in mm — exactly what
  nnU-Net's SimpleITK reader gives for an image (``GetArrayFromImage`` order, spacing
  reversed), so the result equals ``nnUNetv2_predict`` on the same image written to disk;
* the volume is handed over in the orientation the model was trained in (``input.orientation``,
  an axis code such as ``LPS``; :func:`dicomnode.dicom.volume.to_model_grid` permutes and
  reverses the axes, no resampling), and the label map goes back onto the source grid, so a
  series stored with rows or columns reversed or swapped gets the same stations;
* the device is explicit (``"auto"`` picks CUDA when available, else CPU);
* test-time mirroring follows the manifest (``input.use_mirroring``, default false:
  left/right must not be swapped in the pelvis);
* nnU-Net's progress bars and prints are kept out of the node's output.

torch and nnunetv2 are imported only here, and only when a runner is built.

Manifest keys read (``input`` section): ``model_folder`` (default ``nnunet``),
``configuration`` (default ``3d_fullres``), ``folds`` (default: every ``fold_N`` folder
present, ensembled), ``checkpoint`` (default ``checkpoint_final.pth``), ``use_mirroring``
(default false), ``orientation`` (default: none, the array as stored).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.dicom.volume import Volume, is_axis_code, to_model_grid
from dicomnode.errors import ModelError
from dicomnode.inference.manifest import ModelBundle

__all__ = ["NnUNetRunner", "is_available", "model_orientation"]

logger = logging.getLogger(__name__)

DEPENDENCIES = ("torch", "nnunetv2")


def is_available() -> bool:
    """Return True when torch and nnunetv2 can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in DEPENDENCIES)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Capture nnU-Net's prints (it uses ``print``, not logging) and log them at DEBUG."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                logger.debug("nnU-Net: %s", line.strip())


def _resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"device {device!r} is not valid; use 'auto', 'cpu' or 'cuda[:N]'"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use 'auto'")
    return resolved


class NnUNetRunner:
    """A warm nnU-Net v2 predictor for one model bundle.

    Parameters
    ----------
    bundle
        A verified bundle (:func:`dicomnode.inference.manifest.load_bundle`), backend
        ``nnunetv2``.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    threads
        CPU threads for torch (``torch.set_num_threads``, process-wide); None leaves it.

    Raises
    ------
    ModelError
        nnU-Net is not installed, the model folder, a fold or a checkpoint is missing or
        unreadable, or the manifest disagrees with the model folder; the message names the
        path.
    """

    def __init__(self, bundle: ModelBundle, *, device: str = "auto", threads: int | None = None):
        if bundle.backend != "nnunetv2":
            raise ModelError(f"model '{bundle.id}': backend {bundle.backend!r} is not 'nnunetv2'")
        if not is_available():
            raise ModelError(
                "the mri-lln pipeline needs torch and nnunetv2; install dicomnode with its "
                "nnU-Net dependencies (nnunetv2==2.8.1, torch==2.14.1, torchvision==0.29.1)"
            )
        import torch

        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.bundle = bundle
        spec = dict(bundle.input)
        self.model_folder = bundle.root / str(spec.get("model_folder", "nnunet"))
        self.configuration = str(spec.get("configuration", "3d_fullres"))
        self.checkpoint = str(spec.get("checkpoint", "checkpoint_final.pth"))
        self.use_mirroring = bool(spec.get("use_mirroring", False))
        self.orientation = model_orientation(bundle)
        self.folds = self._check_folder(spec.get("folds"))
        self.device = _resolve_device(device)
        self._predictor = self._load()
        logger.info(
            "nnU-Net model %s %s loaded on %s (folds %s, configuration %s, mirroring %s)",
            bundle.id, bundle.version, self.device, list(self.folds), self.configuration,
            self.use_mirroring,
        )  # fmt: skip

    def _check_folder(self, folds: Any) -> tuple[int | str, ...]:
        """Check the model folder layout and return the folds to use."""
        folder = self.model_folder
        if not folder.is_dir():
            raise ModelError(f"model '{self.bundle.id}': nnU-Net model folder {folder} is missing")
        for name in ("dataset.json", "plans.json"):
            if not (folder / name).is_file():
                raise ModelError(f"model '{self.bundle.id}': {folder / name} is missing")
        plans = json.loads((folder / "plans.json").read_text())
        if self.configuration not in plans.get("configurations", {}):
            raise ModelError(
                f"model '{self.bundle.id}': configuration {self.configuration!r} is not in "
                f"{folder / 'plans.json'} (has {sorted(plans.get('configurations', {}))})"
            )
        if folds is None:
            found = sorted(p.name[5:] for p in folder.glob("fold_*") if p.is_dir())
            folds = [int(f) if f.isdigit() else f for f in found]
        chosen = _as_folds(folds, folder)
        for fold in chosen:
            path = folder / f"fold_{fold}" / self.checkpoint
            if not path.is_file():
                raise ModelError(f"model '{self.bundle.id}': checkpoint {path} is missing")
        return chosen

    def _load(self) -> Any:
        """Verify every checkpoint loads without unpickling code, then build the predictor."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        for fold in self.folds:
            _check_weights_only(
                self.model_folder / f"fold_{fold}" / self.checkpoint, self.bundle.id
            )
        with _quiet():
            predictor = nnUNetPredictor(
                tile_step_size=0.5,
                use_gaussian=True,
                use_mirroring=self.use_mirroring,
                perform_everything_on_device=self.device.type == "cuda",
                device=self.device,
                verbose=False,
                verbose_preprocessing=False,
                allow_tqdm=False,
            )
            try:
                predictor.initialize_from_trained_model_folder(
                    str(self.model_folder), use_folds=self.folds, checkpoint_name=self.checkpoint
                )
            except Exception as exc:  # nnU-Net raises bare RuntimeError/KeyError/...
                raise ModelError(
                    f"model '{self.bundle.id}': nnU-Net could not load {self.model_folder} "
                    f"(folds {list(self.folds)}, {self.checkpoint}): {exc}"
                ) from exc
        return predictor

    @property
    def label_values(self) -> tuple[int, ...]:
        """Label values the model can output (from its dataset.json)."""
        labels = self._predictor.dataset_json["labels"]
        return tuple(sorted(int(v) for v in labels.values() if isinstance(v, int)))

    def predict_volume(self, volume: Volume) -> np.ndarray:
        """Segment a volume in the model's declared orientation; the label map is on the
        volume's grid (``(z, y, x)`` like ``volume.array``).

        Raises
        ------
        ModelError
            nnU-Net failed (see :meth:`predict`).
        """
        grid = to_model_grid(volume, self.orientation)
        if grid.order != (0, 1, 2) or grid.flips:
            logger.debug("volume reoriented for %s: axes %s, reversed %s", self.bundle.id, grid.order, grid.flips)
        return grid.restore(self.predict(grid.array, grid.spacing_zyx))

    def predict(self, array_zyx: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
        """Segment one single-channel volume.

        Parameters
        ----------
        array_zyx
            Image ``(z, y, x)`` as ``SimpleITK.GetArrayFromImage`` gives it (any numeric
            dtype; cast to float32 as nnU-Net's reader does).
        spacing_zyx
            Voxel spacing in mm, ``(z, y, x)`` order (SimpleITK ``GetSpacing()[::-1]``).

        Returns
        -------
        numpy.ndarray
            ``uint8`` label map with the shape of ``array_zyx``.

        Raises
        ------
        ModelError
            Bad input shape or spacing, or nnU-Net failed.
        """
        array = np.asarray(array_zyx)
        if array.ndim != 3 or min(array.shape) < 1:
            raise ModelError(f"nnU-Net input must be a 3-D (z, y, x) array, got {array.shape}")
        spacing = [abs(float(s)) for s in spacing_zyx]
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ModelError(f"spacing_zyx must be three positive mm values, got {spacing_zyx!r}")
        data = np.asarray(array[None], dtype=np.float32)
        try:
            with _quiet():
                seg = self._predictor.predict_single_npy_array(data, {"spacing": spacing})
        except Exception as exc:  # nnU-Net raises bare exceptions
            raise ModelError(f"model '{self.bundle.id}': nnU-Net prediction failed: {exc}") from exc
        seg = np.asarray(seg)
        if seg.shape != array.shape:
            raise ModelError(
                f"model '{self.bundle.id}': nnU-Net returned shape {seg.shape} for {array.shape}"
            )
        return seg.astype(np.uint8, copy=False)


def model_orientation(bundle: ModelBundle) -> str | None:
    """The bundle's ``input.orientation`` axis code, or None when it declares none.

    Raises
    ------
    ModelError
        The value is not an axis code (three letters of LRPAIS, one per patient axis).
    """
    code = dict(bundle.input).get("orientation")
    if code is None:
        return None
    if not is_axis_code(code):
        raise ModelError(
            f"model '{bundle.id}': input.orientation {code!r} is not an axis code: three letters "
            "of L/R, P/A, S/I naming where the column, row and slice index increase, e.g. LPS"
        )
    return str(code)


def _check_weights_only(path: Path, model_id: str) -> dict[str, Any]:
    """Refuse a checkpoint that needs arbitrary unpickling.

    nnU-Net itself loads checkpoints with ``weights_only=False``; this check first proves
    the file holds only tensors, containers and numpy scalars (what a full nnU-Net
    training checkpoint contains), so a tampered or foreign file never reaches pickle.
    """
    import torch

    allowed = [np.dtype, np._core.multiarray.scalar]  # type: ignore[attr-defined]
    allowed += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64")]
    try:
        with torch.serialization.safe_globals(allowed):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ModelError(
            f"model '{model_id}': checkpoint {path} cannot be loaded safely "
            f"(torch.load weights_only=True): {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(content, dict) or "network_weights" not in content:
        raise ModelError(f"model '{model_id}': {path} is not an nnU-Net checkpoint")
    return content


def _as_folds(folds: Any, folder: Path) -> tuple[int | str, ...]:
    """Normalise ``input.folds`` to a tuple of ints (or ``"all"``)."""
    if isinstance(folds, int | str):
        folds = [folds]
    if not isinstance(folds, Sequence) or not folds:
        raise ModelError(f"no folds to use in {folder}: set input.folds or add fold_N folders")
    chosen: list[int | str] = []
    for fold in folds:
        if str(fold) == "all":
            chosen.append("all")
        elif str(fold).isdigit():
            chosen.append(int(fold))
        else:
            raise ModelError(f"input.folds entry {fold!r} for {folder} must be an int or 'all'")
    return tuple(chosen)

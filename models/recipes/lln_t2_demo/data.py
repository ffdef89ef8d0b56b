"""Synthetic cases → nnU-Net v2 raw dataset (NIfTI via SimpleITK)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dicomnode.synth.mr import LABELS, SyntheticCase, generate_case

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID}_LLNT2Demo"


def case_images(case: SyntheticCase) -> tuple[sitk.Image, sitk.Image]:
    """Image and label map of a case as SimpleITK images with the DICOM geometry."""
    first = case.datasets[0]
    pixels = np.stack([ds.pixel_array for ds in case.datasets])
    image = sitk.GetImageFromArray(pixels)
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    image.SetSpacing((col_mm, row_mm, float(first.SpacingBetweenSlices)))
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    image.SetDirection(tuple(np.column_stack([iop[:3], iop[3:], normal]).ravel()))
    labels = sitk.GetImageFromArray(case.labels)
    labels.CopyInformation(image)
    return image, labels


def case_params(seed: int) -> dict[str, float]:
    """Per-case acquisition variation: a few degrees of in-plane obliquity."""
    rng = np.random.default_rng(10_000 + seed)
    return {"oblique_deg": float(np.round(rng.uniform(-8.0, 8.0), 2))}


def make_case(seed: int) -> SyntheticCase:
    """The synthetic case used for ``seed`` everywhere in this recipe."""
    return generate_case(seed, **case_params(seed))


def write_raw_dataset(raw: Path, seeds: list[int]) -> Path:
    """Write ``imagesTr``/``labelsTr`` and ``dataset.json``; return the dataset folder."""
    base = raw / DATASET_NAME
    (base / "imagesTr").mkdir(parents=True, exist_ok=True)
    (base / "labelsTr").mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        image, labels = case_images(make_case(seed))
        sitk.WriteImage(image, str(base / "imagesTr" / f"lln_{seed:05d}_0000.nii.gz"))
        sitk.WriteImage(labels, str(base / "labelsTr" / f"lln_{seed:05d}.nii.gz"))
    dataset = {
        "name": DATASET_NAME,
        "description": "Synthetic T2 pelvic MR phantoms (dicomnode.synth.mr). NOT FOR CLINICAL USE",
        "channel_names": {"0": "T2"},
        "labels": {name: value for value, name in LABELS.items()},
        "numTraining": len(seeds),
        "file_ending": ".nii.gz",
    }
    (base / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return base

"""Write a VL Whole Slide Microscopy pyramid whose level 0 is rendered tile by tile.

:func:`write_pyramid` hands wsidicom a source with one level-0 VOLUME instance whose
tiles are produced by a ``render(x, y, width, height)`` callable and JPEG-encoded when
asked; wsidicom writes them as JPEG baseline TILED_FULL instances and adds the lower
levels (``save(add_missing_levels=True)``). The metadata (synthetic H&E lymph node,
"SYNTHETIC^SLIDE" patient) and every UID follow from the seed.

Everything here is synthetic and NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageCms
from pydicom.sr.codedict import codes
from pydicom.uid import UID, JPEGBaseline8Bit
from wsidicom import ImageData, WsiDicom
from wsidicom import metadata as md
from wsidicom.codec import Encoder, JpegSettings
from wsidicom.conceptcode import IlluminationCode, IlluminationColorCode, SpecimenStainsCode
from wsidicom.geometry import Point, Size, SizeMm
from wsidicom.instance import WsiInstance
from wsidicom.metadata import ImageType
from wsidicom.metadata.schema.dicom import WsiMetadataDicomSchema
from wsidicom.metadata.uid_generator import CallableUidGenerator
from wsidicom.source import Source

from dicomnode.dicom.uids import derive_uid

__all__ = ["Render", "write_pyramid"]


def _icc_profile() -> bytes:
    """sRGB ICC profile with the input-device class DICOM asks for (PS3.3 C.11.15.1.1)."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    if not any(icc[84:100]):  # no profile ID (MD5) to invalidate by patching the header
        icc[12:16] = b"scnr"
    return bytes(icc)


def _uid(seed: int, *parts: str) -> UID:
    """A UID that depends only on the seed and ``parts``."""
    return UID(derive_uid("dicomnode.synth.wsi", str(seed), *parts))


def _specimen(seed: int) -> tuple[md.Staining, md.SlideSample]:
    """H&E staining and the lymph-node sample on the slide."""
    stain = md.Staining(
        substances=[SpecimenStainsCode("hematoxylin stain"), SpecimenStainsCode("water soluble eosin stain")]
    )
    sample = md.SlideSample(
        identifier=f"SYNTH-SPECIMEN-{seed}",
        uid=_uid(seed, "specimen"),
        anatomical_sites=[codes.SCT.LymphNode],
        steps=[stain],
        short_description="Synthetic lymph node section",
    )
    return stain, sample


def _metadata(seed: int) -> md.WsiMetadata:
    """wsidicom metadata of a synthetic H&E lymph-node slide; UIDs derived from the seed."""
    when = datetime.datetime(2026, 1, 1, 12, 0, 0)
    stain, sample = _specimen(seed)
    optical = md.OpticalPath(
        identifier="1",
        description="Brightfield",
        icc_profile=_icc_profile(),
        illumination_types=[IlluminationCode("Brightfield illumination")],
        illumination=IlluminationColorCode("Full Spectrum"),
        color_space="SRGB",
    )
    return md.WsiMetadata(
        study=md.Study(
            uid=_uid(seed, "study"),
            identifier=f"SYN{seed}",
            date=when.date(),
            time=when.time(),
            accession_number=f"SYNACC{seed}",
            referring_physician_name="",
            description="Synthetic WSI",
        ),
        series=md.Series(uid=_uid(seed, "series"), number=1, description="H&E (synthetic)"),
        patient=md.Patient(name="SYNTHETIC^SLIDE", identifier=f"SYNTH-{seed}"),
        equipment=md.Equipment(
            manufacturer="dicomnode",
            model_name="synthetic WSI generator",
            device_serial_number="0",
            software_versions=["0.1"],
        ),
        slide=md.Slide(identifier=f"SYNTH-SLIDE-{seed}", stainings=[stain], samples=[sample]),
        pyramid=md.Pyramid(
            image=md.Image(acquisition_datetime=when, content_datetime=when),
            optical_paths=[optical],
            uid=_uid(seed, "pyramid"),
            description="Synthetic pyramid",
        ),
        label=md.Label(),
        frame_of_reference_uid=_uid(seed, "frame-of-reference"),
        dimension_organization_uids=[_uid(seed, "dimension-organization")],
    )


#: ``render(x, y, width, height)`` → ``(height, width, 3)`` uint8 RGB of that level-0 region.
Render = Callable[[int, int, int, int], np.ndarray]


class _RenderedTiles(ImageData):  # type: ignore[misc]
    """Level-0 tiles produced by ``render`` and JPEG-encoded when wsidicom asks."""

    def __init__(self, render: Render, size_px: tuple[int, int], mpp: float, tile_size: int,
                 fill: tuple[int, int, int], quality: int) -> None:
        super().__init__(Encoder.create_for_settings(JpegSettings(quality=quality)))
        self._render, self._size, self._mpp, self._tile, self._fill = render, size_px, mpp, tile_size, fill

    transfer_syntax = property(lambda self: JPEGBaseline8Bit)
    image_size = property(lambda self: Size(*self._size))
    tile_size = property(lambda self: Size(self._tile, self._tile))
    pixel_spacing = property(lambda self: SizeMm(self._mpp / 1000, self._mpp / 1000))
    imaged_size = property(lambda self: SizeMm(*(n * self._mpp / 1000 for n in self._size)))
    samples_per_pixel = property(lambda self: 3)
    photometric_interpretation = property(lambda self: "YBR_FULL_422")
    bits = property(lambda self: 8)
    image_coordinate_system = property(lambda self: None)
    thread_safe = property(lambda self: True)
    lossy_compression = property(lambda self: None)
    transcoder = property(lambda self: None)

    def get_decoded_tile(self, tile: Point, z: float, path: str, cache: bool = True) -> np.ndarray:
        """Render one tile; pixels past the image edge get the fill colour."""
        t, (width, height) = self._tile, self._size
        x, y = tile.x * t, tile.y * t
        out = np.empty((t, t, 3), np.uint8)
        out[:] = self._fill
        w, h = min(t, width - x), min(t, height - y)
        out[:h, :w] = self._render(x, y, w, h)
        return out

    def get_encoded_tile(self, tile: Point, z: float, path: str) -> bytes:
        """Render and JPEG-encode one tile."""
        return bytes(self.encoder.encode(self.get_decoded_tile(tile, z, path)))


class _RenderedSource(Source):  # type: ignore[misc]
    """A wsidicom source with one level-0 VOLUME instance (wsidicom adds the pyramid)."""

    def __init__(self, tiles: _RenderedTiles, seed: int) -> None:
        super().__init__()
        ds = WsiMetadataDicomSchema().dump(_metadata(seed), ImageType.VOLUME, True)
        self._level0 = WsiInstance.create_instance(tiles, ds, ImageType.VOLUME, 0)

    base_dataset = property(lambda self: self._level0.dataset)
    level_instances = property(lambda self: [self._level0])
    label_instances = property(lambda self: [])
    overview_instances = property(lambda self: [])
    thumbnail_instances = property(lambda self: [])
    annotation_instances = property(lambda self: [])

    def close(self) -> None:
        """Nothing to release: tiles are rendered, not read."""


class _SeededUids(CallableUidGenerator):  # type: ignore[misc]
    """SOP Instance UIDs from the seed and the level's size, not from a random source."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._seed = seed

    def sop_uid(self, dataset: Any) -> UID:
        """UID of one pyramid level's instance."""
        size = f"{dataset.TotalPixelMatrixColumns}x{dataset.TotalPixelMatrixRows}"
        return _uid(self._seed, "sop", size, "\\".join(dataset.ImageType))


def write_pyramid(
    folder: Path,
    render: Render,
    size_px: tuple[int, int],
    mpp: float,
    seed: int,
    *,
    tile_size: int = 256,
    fill: tuple[int, int, int] = (255, 255, 255),
    jpeg_quality: int = 90,
) -> list[Path]:
    """Write a VL WSI DICOM pyramid whose level 0 is ``render``-ed tile by tile on demand.

    Metadata (synthetic H&E, "not for clinical use" patient) and every UID follow from
    ``seed``; wsidicom adds the lower levels. ``fill`` colours pixels past the image edge.
    """
    tiles = _RenderedTiles(render, size_px, mpp, tile_size, fill, jpeg_quality)
    with WsiDicom(_RenderedSource(tiles, seed)) as wsi:
        files = wsi.save(folder, uid_generator=_SeededUids(seed), add_missing_levels=True, workers=2,
                         include_labels=False)
    return sorted(Path(str(f)) for f in files)

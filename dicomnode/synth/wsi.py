"""Deterministic synthetic H&E lymph-node whole-slide images as VL WSI DICOM.

A slide is described by a handful of numbers drawn from a seed: tissue blobs (an outline
with a wobbly border), and circular tumour deposits of known diameter. Every pixel is a
pure function of its level-0 position and the seed (stateless integer hashing), so the
level-0 image is rendered tile by tile on demand and never held in memory: a slide ten
times larger costs time, not RAM. wsidicom writes the tiles as JPEG baseline TILED_FULL
instances and builds the pyramid (``save(add_missing_levels=True)``).

Appearance (brightfield H&E, a lymph node cut):

* white glass background;
* pink stroma packed with small dark-purple lymphocyte nuclei (≈ 6 µm), with paler
  sinus-like areas where lymphocytes are sparse;
* tumour deposits: pale lilac cytoplasm with large (≈ 12 µm) vesicular nuclei that have a
  dark rim and a nucleolus.

Everything here is synthetic and NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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

__all__ = ["SyntheticDeposit", "SyntheticSlide", "generate_slide", "render_region", "write_pyramid"]

logger = logging.getLogger(__name__)

ITC_MAX_MM = 0.2
MICRO_MAX_MM = 2.0
_BACKGROUND = np.array([243.0, 241.0, 244.0])
_STROMA = np.array([226.0, 158.0, 196.0])
_LYMPH = np.array([62.0, 36.0, 112.0])
_TUMOUR_CYTO = np.array([238.0, 204.0, 228.0])
_TUMOUR_NUC = np.array([168.0, 134.0, 206.0])
_TUMOUR_RIM = np.array([96.0, 62.0, 150.0])
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class SyntheticDeposit:
    """One circular tumour deposit.

    Attributes
    ----------
    center_mm
        (x, y) in total-pixel-matrix mm from the top-left corner of level 0.
    radius_mm
        Radius in mm.
    """

    center_mm: tuple[float, float]
    radius_mm: float

    @property
    def largest_dimension_mm(self) -> float:
        """Largest dimension (the diameter) in mm."""
        return 2.0 * self.radius_mm

    @property
    def area_mm2(self) -> float:
        """Area in mm²."""
        return math.pi * self.radius_mm**2

    @property
    def category(self) -> str:
        """AJCC class of the deposit alone: ``"itc"``, ``"micro"`` or ``"macro"``."""
        size = self.largest_dimension_mm
        return "itc" if size <= ITC_MAX_MM else "micro" if size <= MICRO_MAX_MM else "macro"


@dataclass(frozen=True)
class _Blob:
    """A tissue piece: ellipse (mm) with a harmonic wobble on its border."""

    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    wobble: tuple[tuple[float, float], ...]  # (amplitude, phase) for harmonics 2, 3, ...

    def touches(self, x_range: np.ndarray, y_range: np.ndarray) -> bool:
        """Whether the box ``x_range × y_range`` (mm) can intersect the blob."""
        reach = max(self.axes) * (1.0 + sum(a for a, _ in self.wobble))
        return bool(
            x_range[0] - reach < self.center[0] < x_range[1] + reach
            and y_range[0] - reach < self.center[1] < y_range[1] + reach
        )

    def inside(self, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
        """Boolean membership of points (broadcast arrays, mm)."""
        dx, dy = x_mm - self.center[0], y_mm - self.center[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = (c * dx + s * dy) / self.axes[0], (-s * dx + c * dy) / self.axes[1]
        theta = np.arctan2(v, u)
        limit = np.ones_like(theta)
        for k, (amp, phase) in enumerate(self.wobble, start=2):
            limit = limit + amp * np.cos(k * theta + phase)
        return np.asarray(u * u + v * v < limit * limit)


@dataclass(frozen=True)
class SyntheticSlide:
    """A synthetic slide written to ``folder`` and its ground truth.

    Attributes
    ----------
    folder
        Folder holding the DICOM files.
    files
        The written VL Whole Slide Microscopy instances (one per pyramid level).
    mpp
        Level-0 pixel spacing in µm/px.
    size_px
        (width, height) of level 0.
    deposits
        The tumour deposits (empty for a node-negative slide).
    seed
        The seed it was generated from.
    """

    folder: Path
    files: list[Path]
    mpp: float
    size_px: tuple[int, int]
    deposits: list[SyntheticDeposit]
    seed: int = 0
    blobs: tuple[_Blob, ...] = field(default=(), repr=False)

    def _grid(self, mpp: float) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (mm) of a raster at ``mpp`` covering level 0."""
        scale = self.mpp / mpp
        cols = math.ceil(self.size_px[0] * scale - 1e-9)
        rows = math.ceil(self.size_px[1] * scale - 1e-9)
        return ((np.arange(cols) + 0.5) * mpp / 1000.0, (np.arange(rows) + 0.5) * mpp / 1000.0)

    def mask(self, mpp: float) -> np.ndarray:
        """Ground-truth tumour mask at ``mpp`` µm/px.

        Pixel ``(r, c)`` covers ``[c·mpp, (c+1)·mpp) × [r·mpp, (r+1)·mpp)`` µm of level 0
        and is true when its centre lies in a deposit. Shape is
        ``(ceil(height·mpp0/mpp), ceil(width·mpp0/mpp))``.
        """
        xs, ys = self._grid(mpp)
        out = np.zeros((ys.size, xs.size), dtype=bool)
        for dep in self.deposits:
            (cx, cy), r = dep.center_mm, dep.radius_mm
            c0, c1 = np.searchsorted(xs, [cx - r, cx + r])
            r0, r1 = np.searchsorted(ys, [cy - r, cy + r])
            sub = (xs[None, c0:c1] - cx) ** 2 + (ys[r0:r1, None] - cy) ** 2 < r * r
            out[r0:r1, c0:c1] |= sub
        return out

    def tissue_mask(self, mpp: float) -> np.ndarray:
        """Ground-truth tissue mask (tissue blobs and deposits) at ``mpp`` µm/px."""
        xs, ys = self._grid(mpp)
        out = self.mask(mpp)
        for blob in self.blobs:
            for r in range(0, ys.size, 512):  # row blocks keep float temporaries small
                out[r : r + 512] |= blob.inside(xs[None, :], ys[r : r + 512, None])
        return out


def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Stateless hash of integer lattice points to floats in [0, 1)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(salt & 0xFFFFFFFF)
        h ^= h >> np.uint64(31)
        h = (h * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        h ^= h >> np.uint64(29)
        h = (h * np.uint64(0x94D049BB133111EB)) & _MASK64
        h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _lattice(i0: int, j0: int, rows: int, cols: int, salt: int, n: int) -> list[np.ndarray]:
    """``n`` hashed float fields on lattice rows ``j0..j0+rows`` × cols ``i0..i0+cols``."""
    jj, ii = np.mgrid[j0 : j0 + rows, i0 : i0 + cols]
    return [_hash(ii, jj, salt + k) for k in range(n)]


def _value_noise(xs: np.ndarray, ys: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Smooth noise in [0, 1) on the grid ``ys × xs`` (µm): interpolated lattice values."""
    gx, gy = xs / cell, ys / cell
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    (val,) = _lattice(int(ix[0]), int(iy[0]), int(iy[-1] - iy[0]) + 2, int(ix[-1] - ix[0]) + 2, salt, 1)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    cx, cy = ix - ix[0], iy - iy[0]
    top = val[cy][:, cx] * (1 - fx) + val[cy][:, cx + 1] * fx
    bottom = val[cy + 1][:, cx] * (1 - fx) + val[cy + 1][:, cx + 1] * fx
    return np.asarray(top * (1 - fy[:, None]) + bottom * fy[:, None])


def _nuclei(
    xs: np.ndarray,
    ys: np.ndarray,
    cell: float,
    radius: float,
    density: float,
    salt: int,
    sparse: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Distance to the nearest nucleus centre, in units of its radius, on ``ys × xs`` (µm).

    One candidate nucleus per cell of a ``cell``-µm lattice, jittered, kept with
    probability ``density``; the 3 × 3 neighbouring cells are searched. ``sparse``
    = (noise cell µm, threshold, floor) thins nuclei where a smooth noise is high (sinuses).
    """
    gx, gy = np.floor(xs / cell).astype(np.int64), np.floor(ys / cell).astype(np.int64)
    i0, j0 = int(gx[0]) - 1, int(gy[0]) - 1
    rows, cols = int(gy[-1]) - j0 + 2, int(gx[-1]) - i0 + 2
    jit_x, jit_y, size, keep = _lattice(i0, j0, rows, cols, salt, 4)
    p = np.full((rows, cols), density)
    if sparse is not None:
        noise = _value_noise(
            (np.arange(cols) + i0 + 0.5) * cell,
            (np.arange(rows) + j0 + 0.5) * cell,
            sparse[0],
            salt + 7,
        )
        p = np.clip(density * (1.0 - (noise - sparse[1]) * 3.0), sparse[2], density)
    cen_x = ((np.arange(cols) + i0 + 0.15)[None, :] + 0.7 * jit_x) * cell
    cen_y = ((np.arange(rows) + j0 + 0.15)[:, None] + 0.7 * jit_y) * cell
    inv_r2 = 1.0 / (radius * (0.8 + 0.4 * size)) ** 2
    off = np.where(keep < p, 0.0, 1e9)
    lat = np.stack([cen_x, cen_y, inv_r2, off]).astype(np.float32).reshape(4, -1)
    xs32, ys32 = xs.astype(np.float32)[None, :], ys.astype(np.float32)[:, None]
    best = np.full((ys.size, xs.size), np.inf, dtype=np.float32)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            idx = (gy + dy - j0)[:, None] * cols + (gx + dx - i0)[None, :]
            cx, cy, ir2, of = (np.take(lat[k], idx) for k in range(4))
            np.minimum(best, ((xs32 - cx) ** 2 + (ys32 - cy) ** 2) * ir2 + of, out=best)
    return np.sqrt(best)


def _grain(x: int, y: int, width: int, height: int, salt: int) -> np.ndarray:
    """Per-pixel sensor-like noise in [-1, 1) keyed on level-0 pixel indices."""
    jj, ii = np.mgrid[y : y + height, x : x + width]
    return np.asarray(2.0 * _hash(ii, jj, salt) - 1.0)


def _stroma(xs: np.ndarray, ys: np.ndarray, seed: int) -> np.ndarray:
    """Lymph-node parenchyma: pink stroma, dense lymphocytes, paler sparse sinuses."""
    low = _value_noise(xs, ys, 70.0, seed + 17)
    shade = _value_noise(xs, ys, 20.0, seed + 2)
    sinus = np.clip((low - 0.62) * 3.0, 0.0, 1.0)[..., None]
    base = _STROMA * (0.93 + 0.12 * shade)[..., None]
    base = base + sinus * (250.0 - base) * 0.45
    d = _nuclei(xs, ys, 7.5, 3.0, 0.92, seed + 10, sparse=(70.0, 0.62, 0.12))
    alpha = np.clip((1.1 - d) / 0.25, 0.0, 1.0)[..., None]
    return np.asarray(base * (1.0 - alpha) + _LYMPH * alpha)


def _tumour(xs: np.ndarray, ys: np.ndarray, seed: int) -> np.ndarray:
    """Metastatic carcinoma: pale cytoplasm, large vesicular nuclei with rim and nucleolus."""
    shade = _value_noise(xs, ys, 30.0, seed + 3)
    col = _TUMOUR_CYTO * (0.95 + 0.08 * shade)[..., None]
    d = _nuclei(xs, ys, 16.0, 6.0, 0.9, seed + 20)
    inner = np.clip((1.0 - d) / 0.15, 0.0, 1.0)[..., None]
    rim = np.clip(1.0 - np.abs(d - 0.85) / 0.15, 0.0, 1.0)[..., None]
    nucleolus = np.clip((0.25 - d) / 0.08, 0.0, 1.0)[..., None]
    col = col * (1.0 - inner) + _TUMOUR_NUC * inner
    col = col * (1.0 - rim) + _TUMOUR_RIM * rim
    col = col * (1.0 - nucleolus) + 0.8 * _TUMOUR_RIM * nucleolus
    lymph = np.clip((1.1 - _nuclei(xs, ys, 7.5, 3.0, 0.06, seed + 10)) / 0.25, 0.0, 1.0)
    return np.asarray(col * (1.0 - lymph[..., None]) + _LYMPH * lymph[..., None])


def render_region(slide: SyntheticSlide, x: int, y: int, width: int, height: int) -> np.ndarray:
    """Render a level-0 region of a synthetic slide.

    Parameters
    ----------
    slide
        The slide description (only ``seed``, ``mpp``, ``blobs`` and ``deposits`` are used,
        so this also works before the DICOM files exist).
    x, y
        Level-0 pixel of the region's top-left corner.
    width, height
        Region size in pixels.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8 RGB.
    """
    xs = (np.arange(x, x + width) + 0.5) * slide.mpp
    ys = (np.arange(y, y + height) + 0.5) * slide.mpp
    x_mm, y_mm = xs[None, :] / 1000.0, ys[:, None] / 1000.0
    tissue = np.zeros((height, width), dtype=bool)
    for blob in slide.blobs:
        if blob.touches(x_mm[0, [0, -1]], y_mm[[0, -1], 0]):
            tissue |= blob.inside(x_mm, y_mm)
    tumour = np.zeros((height, width), dtype=bool)
    for dep in slide.deposits:
        (cx, cy), r = dep.center_mm, dep.radius_mm
        tumour |= (x_mm - cx) ** 2 + (y_mm - cy) ** 2 < r * r
    img = np.broadcast_to(_BACKGROUND, (height, width, 3)).copy()
    if tissue.any():
        img = np.where(tissue[..., None], _stroma(xs, ys, slide.seed), img)
    if tumour.any():
        img = np.where(tumour[..., None], _tumour(xs, ys, slide.seed), img)
    img += 5.0 * _grain(x, y, width, height, slide.seed + 101)[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _random_blobs(rng: np.random.Generator, size_mm: tuple[float, float]) -> tuple[_Blob, ...]:
    """One lymph-node section filling most of the slide, sometimes a small second piece."""
    w, h = size_mm

    def wobble() -> tuple[tuple[float, float], ...]:
        return tuple((float(rng.uniform(0.01, 0.04)), float(rng.uniform(0, 2 * math.pi))) for _ in range(4))

    main = _Blob(
        center=(w * float(rng.uniform(0.48, 0.52)), h * float(rng.uniform(0.48, 0.52))),
        axes=(w * float(rng.uniform(0.38, 0.42)), h * float(rng.uniform(0.36, 0.40))),
        angle=float(rng.uniform(-0.3, 0.3)),
        wobble=wobble(),
    )
    if rng.random() >= 0.5:
        return (main,)
    small = _Blob(
        center=(w * 0.9, h * 0.1),
        axes=(w * 0.06, h * 0.05),
        angle=float(rng.uniform(0, math.pi)),
        wobble=wobble(),
    )
    return (main, small)


def _fits(blob: _Blob, dep: SyntheticDeposit, others: list[SyntheticDeposit]) -> bool:
    """Deposit lies inside the blob (with a margin) and keeps away from the others."""
    (cx, cy), r = dep.center_mm, dep.radius_mm + 0.05
    ang = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    pts_x, pts_y = np.append(cx + r * np.cos(ang), cx), np.append(cy + r * np.sin(ang), cy)
    if not bool(np.all(blob.inside(pts_x, pts_y))):
        return False
    return all(math.dist(dep.center_mm, o.center_mm) > dep.radius_mm + o.radius_mm + 0.15 for o in others)


def _random_deposits(rng: np.random.Generator, blob: _Blob) -> list[SyntheticDeposit]:
    """An ITC (0.10–0.19 mm), a micrometastasis (0.35–1.2 mm), sometimes a second micro."""
    diameters = [float(rng.uniform(0.10, 0.19)), float(rng.uniform(0.35, 1.2))]
    if rng.random() < 0.5:
        diameters.append(float(rng.uniform(0.25, 0.6)))
    placed: list[SyntheticDeposit] = []
    for diameter in sorted(diameters, reverse=True):
        for _ in range(500):
            off = rng.uniform(-1.0, 1.0, 2) * np.asarray(blob.axes)
            dep = SyntheticDeposit(
                (
                    round(blob.center[0] + float(off[0]), 4),
                    round(blob.center[1] + float(off[1]), 4),
                ),
                round(diameter / 2.0, 4),
            )
            if _fits(blob, dep, placed):
                placed.append(dep)
                break
        else:
            raise ValueError(f"cannot place a {diameter:.2f} mm deposit: 'size_mm' too small")
    return placed


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


def generate_slide(
    folder: Path,
    seed: int,
    *,
    size_mm: tuple[float, float] = (4.0, 4.0),
    mpp: float = 0.5,
    deposits: Sequence[tuple[float, float, float]] | None = None,
    tile_size: int = 256,
) -> SyntheticSlide:
    """Generate a synthetic H&E lymph-node slide and write it as VL WSI DICOM.

    Parameters
    ----------
    folder
        Output folder (created; must be new or empty).
    seed
        Everything (tissue shape, deposits when not given, texture, UIDs) follows from it.
    size_mm
        (width, height) of the slide's total pixel matrix in mm.
    mpp
        Level-0 pixel spacing in µm/px.
    deposits
        ``(x_mm, y_mm, diameter_mm)`` per tumour deposit; ``None`` draws a seeded set with
        one ITC-sized (≤ 0.2 mm) and one or two micro-sized (0.2–2 mm) deposits; ``[]``
        gives a node-negative slide.
    tile_size
        Tile edge in pixels (multiple of 16).

    Returns
    -------
    SyntheticSlide
        Paths, geometry and ground truth.

    Raises
    ------
    ValueError
        A parameter is out of range (the message names it).
    """
    if min(size_mm) <= 0 or mpp <= 0:
        raise ValueError(f"'size_mm' {size_mm} and 'mpp' {mpp} must be positive")
    if tile_size < 16 or tile_size % 16:
        raise ValueError(f"'tile_size' must be a multiple of 16, got {tile_size}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"'folder' {folder} is not empty: a slide needs a folder of its own")
    rng = np.random.default_rng(seed)
    blobs = _random_blobs(rng, size_mm)
    if deposits is None:
        placed = _random_deposits(rng, blobs[0])
    else:
        placed = [SyntheticDeposit((float(x), float(y)), float(d) / 2.0) for x, y, d in deposits]
    for dep in placed:
        if not (0 <= dep.center_mm[0] <= size_mm[0] and 0 <= dep.center_mm[1] <= size_mm[1]):
            raise ValueError(f"'deposits': centre {dep.center_mm} lies outside {size_mm} mm")
    size_px = (round(size_mm[0] * 1000 / mpp), round(size_mm[1] * 1000 / mpp))
    folder.mkdir(parents=True, exist_ok=True)
    slide = SyntheticSlide(folder, [], mpp, size_px, placed, seed=seed, blobs=blobs)
    files = write_pyramid(folder, lambda x, y, w, h: render_region(slide, x, y, w, h), size_px, mpp, seed,
                          tile_size=tile_size)
    logger.info(
        "synthetic slide seed=%d %dx%d px, %d deposit(s), %d file(s) in %s",
        seed,
        *size_px,
        len(placed),
        len(files),
        folder,
    )
    return replace(slide, files=files)

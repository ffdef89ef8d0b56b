"""Open a VL Whole Slide Microscopy series and read it at a model's resolution.

The slide is opened from the spooled instance files with wsidicom; only VOLUME levels are
used (label, overview and thumbnail instances are ignored). A model asks for a resolution
in µm/px; :meth:`Slide.raster` picks the level that matches it (within a tolerance) or the
nearest *finer* level, which :meth:`Slide.read` then downscales. Reads are by region, so
level 0 is never held in memory as a whole.

Only brightfield RGB slides are supported; a fluorescence pyramid (several optical paths,
MONOCHROME2 frames) and a series wsidicom refuses both raise :class:`PipelineError` with a
reason, never a traceback from the reader.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from dicomnode.errors import PipelineError

__all__ = ["Level", "Raster", "Slide", "check_brightfield", "open_slide"]

logger = logging.getLogger(__name__)

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_BRIGHTFIELD = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
#: A level whose µm/px is within this relative distance of the target is used as is.
MPP_TOLERANCE = 0.02
_WHITE = 255


@dataclass(frozen=True)
class Level:
    """One VOLUME level of the pyramid.

    Attributes
    ----------
    level
        wsidicom's pyramid level number (log2 of the downscale from the base).
    width, height
        Total pixel matrix size in pixels.
    mpp
        Pixel spacing in µm/px (columns direction; rows are checked to be equal).
    tile_height
        Height of the level's stored tiles (frames) in pixels; 0 = unknown.
    """

    level: int
    width: int
    height: int
    mpp: float
    tile_height: int = 0


@dataclass(frozen=True)
class Raster:
    """A virtual image of the whole slide at an effective µm/px, read from one level.

    Attributes
    ----------
    level
        The level pixels come from.
    scale
        Level pixels per raster pixel (1.0 = the level as is, > 1 = downscaled).
    mpp
        Effective µm/px of the raster (``level.mpp * scale``).
    width, height
        Raster size in pixels covering the base level's total pixel matrix.
    """

    level: Level
    scale: float
    mpp: float
    width: int
    height: int


def _headers(files: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    out: list[tuple[Path, Dataset]] = []
    for path in map(Path, files):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for a bad file
            raise PipelineError(f"cannot read DICOM header of {path.name}: {exc}") from exc
        if ds.get("SOPClassUID") == WSI_SOP_CLASS:
            out.append((path, ds))
    if not out:
        raise PipelineError("no VL Whole Slide Microscopy Image instance among the files")
    return out


def _is_volume(ds: Dataset) -> bool:
    image_type = list(ds.get("ImageType", []))
    return len(image_type) >= 3 and str(image_type[2]).upper() == "VOLUME"


def check_brightfield(headers: Sequence[Dataset]) -> None:
    """Refuse anything but a brightfield RGB slide.

    Raises
    ------
    PipelineError
        ``unsupported: not a brightfield RGB slide ...`` naming what was found.
    """
    for ds in headers:
        if not _is_volume(ds) and "ImageType" in ds:
            continue
        pi = str(ds.get("PhotometricInterpretation", ""))
        samples = int(ds.get("SamplesPerPixel", 0))
        paths = int(ds.get("NumberOfOpticalPaths", len(ds.get("OpticalPathSequence", [])) or 1))
        if pi not in _BRIGHTFIELD or samples != 3 or paths > 1:
            raise PipelineError(
                "unsupported: not a brightfield RGB slide "
                f"(PhotometricInterpretation {pi or 'missing'}, SamplesPerPixel {samples}, "
                f"{paths} optical path(s); fluorescence/multi-channel slides are not supported)",
                series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
            )


def _diagnose(headers: Sequence[Dataset]) -> str:
    """Explain why wsidicom found no level, from the headers."""
    reasons: list[str] = []
    for ds in headers:
        if "ImageType" not in ds:
            reasons.append("ImageType is missing (VOLUME required)")
        elif not _is_volume(ds):
            continue
        if "DimensionOrganizationType" not in ds:
            reasons.append(
                "DimensionOrganizationType is missing, so the frame order is unknown "
                "(TILED_FULL row-major expected; this file may store frames column-major)"
            )
        if "TotalPixelMatrixColumns" not in ds:
            reasons.append("TotalPixelMatrixColumns/Rows are missing")
    if not any(_is_volume(ds) for ds in headers):
        reasons.append("no instance has ImageType VOLUME (only label/overview/thumbnail?)")
    return "; ".join(dict.fromkeys(reasons)) or "see the wsidicom message"


def _jfif_labelled_rgb(wsi: object, base: Dataset, level: Level) -> bool:
    """Whether a level's JPEG frames are YCbCr (JFIF) although the header says RGB.

    Converters such as wsi2dcm write JFIF baseline JPEGs (YCbCr by definition) with
    PhotometricInterpretation RGB; wsidicom then returns the YCbCr samples unconverted.
    pydicom warns about the same mismatch and decodes as YBR_FULL_422; so do we.
    """
    if str(base.get("PhotometricInterpretation", "")) != "RGB":
        return False
    try:
        frame = wsi.read_encoded_tile(level.level, (0, 0))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a level we cannot probe is left as decoded
        return False
    if frame[:2] != b"\xff\xd8":
        return False  # not a JPEG baseline frame
    return _signals_ycbcr(frame[:4096])


def _signals_ycbcr(head: bytes) -> bool:
    """Whether a JPEG header declares YCbCr samples (libjpeg's own colour-space rules).

    'R','G','B' component ids mean RGB; an Adobe APP14 marker decides by its transform
    flag (0 = RGB); otherwise a JFIF APP0 marker means YCbCr.
    """
    sof = head.find(b"\xff\xc0")
    if sof >= 0 and tuple(head[sof + 10 + 3 * k] for k in range(3)) == (0x52, 0x47, 0x42):
        return False
    adobe = head.find(b"Adobe")  # APP14: FF EE, length (2), "Adobe", 6 bytes, transform
    if adobe >= 2 and head[adobe - 4 : adobe - 2] == b"\xff\xee" and len(head) > adobe + 11:
        return head[adobe + 11] != 0
    return b"JFIF" in head


def _level_from(group: object) -> Level:
    size, mpp = group.size, group.mpp  # type: ignore[attr-defined]
    if abs(float(mpp.height) / float(mpp.width) - 1.0) > 0.01:
        raise PipelineError(
            f"unsupported: non-square pixels ({mpp.width:g} x {mpp.height:g} µm/px) on level {group.level}"  # type: ignore[attr-defined]
        )
    tile = int(getattr(getattr(group, "tile_size", None), "height", 0) or 0)
    return Level(int(group.level), int(size.width), int(size.height), float(mpp.width), tile)  # type: ignore[attr-defined]


class Slide:
    """An open brightfield slide: VOLUME levels, the base header and region reads.

    Use :func:`open_slide`; it closes the underlying wsidicom object.

    Parameters
    ----------
    wsi
        An open ``wsidicom.WsiDicom``.
    base
        Header (no pixel data) of the level-0 instance: the source of SEG/SR references.
    """

    def __init__(self, wsi: object, base: Dataset) -> None:
        self._wsi = wsi
        self.base = base
        levels = [_level_from(g) for g in wsi.levels]  # type: ignore[attr-defined]
        self.levels: list[Level] = sorted(levels, key=lambda lv: lv.mpp)
        self._ycbcr = {lv.level for lv in self.levels if _jfif_labelled_rgb(wsi, base, lv)}
        if self._ycbcr:
            logger.warning(
                "levels %s: PhotometricInterpretation RGB but JFIF (YCbCr) JPEG frames; "
                "converting YCbCr to RGB after decoding",
                sorted(self._ycbcr),
            )
        self.levels = self._consistent(self.levels)

    def _level_region(self, lv: Level, x: int, y: int, w: int, h: int) -> np.ndarray:
        try:
            region = self._wsi.read_region((x, y), lv.level, (w, h), as_array=True)  # type: ignore[attr-defined]
        except Exception as exc:  # decoders raise anything on a corrupt frame
            raise PipelineError(
                f"cannot read/decode slide level {lv.level} region x={x} y={y} {w}x{h}: {type(exc).__name__}: {exc}",
                series_uid=str(self.base.get("SeriesInstanceUID", "")) or None,
            ) from exc
        region = np.ascontiguousarray(region[..., :3])
        if lv.level in self._ycbcr:
            region = np.asarray(Image.fromarray(region, "YCbCr").convert("RGB"))
        return region

    def _consistent(self, levels: list[Level], side: int = 64) -> list[Level]:
        """Drop pyramid levels whose colours disagree with the next finer kept level.

        Some converters build missing levels from wrongly decoded data (YCbCr taken as
        RGB) and store the result as RGB, so no header tells. A central patch of each
        level is compared with the same area of the finer level, box-downscaled.
        """
        kept = [levels[0]]
        for lv in levels[1:]:
            fine = kept[-1]
            w, h = min(side, lv.width), min(side, lv.height)
            x, y = (lv.width - w) // 2, (lv.height - h) // 2
            ratio = lv.mpp / fine.mpp
            fx, fy = int(x * ratio), int(y * ratio)
            fw = max(1, min(round(w * ratio), fine.width - fx))
            fh = max(1, min(round(h * ratio), fine.height - fy))
            ref = Image.fromarray(self._level_region(fine, fx, fy, fw, fh))
            ref_arr = np.asarray(ref.resize((w, h), Image.Resampling.BOX), np.float32)
            diff = float(np.abs(self._level_region(lv, x, y, w, h) - ref_arr).mean())
            if diff > 30.0:
                logger.warning(
                    "level %d (%.3f µm/px) ignored: its colours differ from level %d by %.0f grey levels on average",
                    lv.level,
                    lv.mpp,
                    fine.level,
                    diff,
                )
                continue
            kept.append(lv)
        return kept

    @property
    def mpp(self) -> float:
        """µm/px of the finest level."""
        return self.levels[0].mpp

    @property
    def size_um(self) -> tuple[float, float]:
        """Width and height of the total pixel matrix in µm."""
        base = self.levels[0]
        return base.width * base.mpp, base.height * base.mpp

    def raster(self, mpp: float, *, max_upsample: float = 1.0 + MPP_TOLERANCE) -> Raster:
        """The raster for a model that wants ``mpp`` µm/px.

        A level within :data:`MPP_TOLERANCE` is used as is; otherwise the nearest finer
        level is downscaled. A slide coarser than ``mpp * max_upsample`` is refused.

        Raises
        ------
        PipelineError
            The finest level is too coarse for the model.
        """
        if mpp <= 0:
            raise ValueError(f"'mpp' must be > 0, got {mpp}")
        close = [lv for lv in self.levels if abs(lv.mpp / mpp - 1.0) <= MPP_TOLERANCE]
        if close:
            level, scale = close[-1], 1.0
        else:
            finer = [lv for lv in self.levels if lv.mpp < mpp]
            if not finer:
                if self.mpp > mpp * max_upsample:
                    raise PipelineError(
                        f"slide too coarse for the model: finest level is {self.mpp:.3f} µm/px, "
                        f"the model needs {mpp:g} µm/px"
                    )
                level, scale = self.levels[0], 1.0
            else:
                level, scale = finer[-1], mpp / finer[-1].mpp
        # the raster covers the base level's extent (a coarser level may be truncated)
        base, mpp_eff = self.levels[0], level.mpp * scale
        width = math.ceil(base.width * base.mpp / mpp_eff - 1e-6)
        height = math.ceil(base.height * base.mpp / mpp_eff - 1e-6)
        return Raster(level, scale, mpp_eff, width, height)

    def read(self, raster: Raster, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Read a ``(height, width, 3)`` uint8 RGB region of ``raster`` at (x, y).

        Parts outside the total pixel matrix are white (background).
        """
        s, lv = raster.scale, raster.level
        fx0, fy0, fx1, fy1 = x * s, y * s, (x + width) * s, (y + height) * s
        ix0, iy0 = max(int(math.floor(fx0)), 0), max(int(math.floor(fy0)), 0)
        ix1, iy1 = min(int(math.ceil(fx1)), lv.width), min(int(math.ceil(fy1)), lv.height)
        canvas_w, canvas_h = math.ceil(fx1) - math.floor(fx0), math.ceil(fy1) - math.floor(fy0)
        canvas = np.full((canvas_h, canvas_w, 3), _WHITE, np.uint8)
        if ix1 > ix0 and iy1 > iy0:
            region = self._level_region(lv, ix0, iy0, ix1 - ix0, iy1 - iy0)
            ox, oy = ix0 - math.floor(fx0), iy0 - math.floor(fy0)
            canvas[oy : oy + region.shape[0], ox : ox + region.shape[1]] = region[..., :3]
        if s == 1.0:
            return canvas[:height, :width]
        box = (fx0 - math.floor(fx0), fy0 - math.floor(fy0))
        box4 = (box[0], box[1], box[0] + width * s, box[1] + height * s)
        img = Image.fromarray(canvas).resize((width, height), Image.Resampling.BOX, box=box4)
        return np.asarray(img)

    def read_raster(self, raster: Raster, rows_per_read: int = 512) -> np.ndarray:
        """Read a whole (low-resolution) raster, strip by strip."""
        out = np.empty((raster.height, raster.width, 3), np.uint8)
        for y in range(0, raster.height, rows_per_read):
            h = min(rows_per_read, raster.height - y)
            out[y : y + h] = self.read(raster, 0, y, raster.width, h)
        return out


def _select_series(found: Sequence[tuple[Path, Dataset]]) -> tuple[list[Path], list[Dataset]]:
    """Keep the instances of the one slide series (a label from another series is dropped)."""
    volumes = {str(ds.SeriesInstanceUID) for _, ds in found if _is_volume(ds)}
    if len(volumes) > 1:
        raise PipelineError(f"the files hold {len(volumes)} slide series; send one series per job")
    if not volumes:
        return [p for p, _ in found], [ds for _, ds in found]
    series = volumes.pop()
    kept = [(p, ds) for p, ds in found if str(ds.SeriesInstanceUID) == series]
    return [p for p, _ in kept], [ds for _, ds in kept]


def _base_header(headers: Sequence[Dataset]) -> Dataset:
    volumes = [ds for ds in headers if _is_volume(ds)]
    return max(volumes, key=lambda ds: int(ds.TotalPixelMatrixColumns) * int(ds.TotalPixelMatrixRows))


@contextmanager
def open_slide(files: Sequence[Path]) -> Iterator[Slide]:
    """Open the slide in ``files`` (one series; other instances are ignored).

    Raises
    ------
    PipelineError
        Not a VL WSI series, not brightfield RGB, or wsidicom refuses the files; the
        message says why.
    """
    from wsidicom import WsiDicom  # heavy optional dependency: imported here only

    paths, headers = _select_series(_headers(files))
    check_brightfield(headers)
    try:
        wsi = WsiDicom.open(paths)
    except Exception as exc:  # wsidicom raises its own unrelated exception classes
        raise PipelineError(
            f"cannot open slide with wsidicom: {type(exc).__name__}: {exc} ({_diagnose(headers)})"
        ) from exc
    try:
        if not wsi.levels:
            raise PipelineError(f"cannot open slide: no VOLUME level ({_diagnose(headers)})")
        slide = Slide(wsi, _base_header(headers))
        logger.info(
            "opened slide series %s: levels %s",
            slide.base.SeriesInstanceUID,
            [(lv.width, lv.height, round(lv.mpp, 3)) for lv in slide.levels],
        )
        yield slide
    finally:
        wsi.close()

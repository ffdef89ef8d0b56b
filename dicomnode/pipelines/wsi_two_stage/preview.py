"""PNG preview of a slide result: thumbnail, three-band heatmap, deposit outlines, legend.

The heatmap follows the display convention of SEEDS §2: red p > 0.9, green 0.7–0.9,
blue 0.5–0.7, drawn half-transparent over the thumbnail; deposits are outlined in
yellow. A legend strip under the image names the bands, the slide class and says
"NOT FOR CLINICAL USE".
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dicomnode.outputs.common import NOT_FOR_CLINICAL_USE
from dicomnode.pipelines.wsi_two_stage.seg import BAND_COLOURS, TUMOUR_COLOUR, to_output_grid

__all__ = ["HeatmapImage", "finish_preview", "heatmap_image", "render_preview"]

logger = logging.getLogger(__name__)

_ALPHA = 0.45
_LEGEND_H = 64


def _fit(rgb: np.ndarray, max_side: int) -> tuple[Image.Image, float]:
    img = Image.fromarray(rgb)
    scale = min(1.0, max_side / max(img.size))
    if scale < 1.0:
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.Resampling.BOX,
        )
    return img, scale


def _overlay(img: Image.Image, bands: np.ndarray) -> Image.Image:
    """Blend the bands (``(3, r, c)`` bool on the thumbnail's pixel grid) onto ``img``."""
    lut = np.zeros((4, 3), np.float64)
    lut[1:] = np.asarray(BAND_COLOURS, np.float64)
    label = np.zeros(bands.shape[1:], np.uint8)
    for k in (2, 1, 0):  # highest band wins
        label[bands[k]] = k + 1
    label_img = Image.fromarray(label).resize(img.size, Image.Resampling.NEAREST)
    lab = np.asarray(label_img)
    out = np.array(img)
    hit = lab > 0  # unlabelled pixels keep the thumbnail's values exactly
    blended = out[hit].astype(np.float64) * (1 - _ALPHA) + lut[lab[hit]] * _ALPHA
    out[hit] = blended.astype(np.uint8)
    return Image.fromarray(out)


def _legend(width: int, bands: Sequence[float], headline: str) -> Image.Image:
    strip = Image.new("RGB", (max(width, 420), _LEGEND_H), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    lo, mid, hi = (f"{float(b):g}" for b in bands)
    entries = [
        (BAND_COLOURS[0], f"p>{hi}"),
        (BAND_COLOURS[1], f"{mid}-{hi}"),
        (BAND_COLOURS[2], f"{lo}-{mid}"),
        (TUMOUR_COLOUR, "deposit"),
    ]
    x = 6
    for colour, text in entries:
        draw.rectangle([x, 6, x + 14, 20], fill=colour, outline=(0, 0, 0))
        draw.text((x + 18, 7), text, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(text, font=font)) + 12
    _words(draw, (6, 26), headline, (0, 0, 0), font)
    _words(draw, (6, 44), NOT_FOR_CLINICAL_USE, (200, 0, 0), font)
    return strip


def _words(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill: tuple[int, int, int],
           font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> None:
    """Draw ``text`` word by word: Pillow's small default font renders a space ~1 px wide."""
    x, y = xy
    gap = max(4.0, float(draw.textlength(" ", font=font)))
    for word in text.split():
        draw.text((x, y), word, fill=fill, font=font)
        x += int(draw.textlength(word, font=font) + gap)


@dataclass(frozen=True)
class HeatmapImage:
    """The thumbnail with the heatmap bands blended in (:func:`heatmap_image`).

    Attributes
    ----------
    image
        Fitted RGB image.
    px_per_um
        Image pixels per µm of slide.
    """

    image: Image.Image
    px_per_um: float


def heatmap_image(
    thumbnail: np.ndarray,
    thumbnail_mpp: float,
    bands: np.ndarray,
    band_cell_um: float,
    *,
    max_side: int = 1024,
) -> HeatmapImage:
    """The thumbnail fitted to ``max_side`` with the bands overlaid: everything of the
    preview that does not depend on the deposits (see :func:`render_preview`)."""
    img, scale = _fit(thumbnail, max_side)
    on_thumb = to_output_grid(bands, band_cell_um, thumbnail_mpp, thumbnail.shape[:2])
    return HeatmapImage(_overlay(img, on_thumb), scale / thumbnail_mpp)


def finish_preview(
    heatmap: HeatmapImage,
    outlines_um: Sequence[np.ndarray],
    *,
    band_limits: Sequence[float],
    headline: str,
) -> bytes:
    """Draw the deposit outlines and the legend on ``heatmap``; the PNG file content."""
    img = heatmap.image.copy()
    draw = ImageDraw.Draw(img)
    for ring in outlines_um:
        pts = [(float(x) * heatmap.px_per_um, float(y) * heatmap.px_per_um) for x, y in ring]
        if len(pts) >= 2:
            draw.line(pts, fill=TUMOUR_COLOUR, width=2)
    legend = _legend(img.width, band_limits, headline)
    out = Image.new("RGB", (max(img.width, legend.width), img.height + legend.height), "white")
    out.paste(img, (0, 0))
    out.paste(legend, (0, img.height))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def render_preview(
    thumbnail: np.ndarray,
    thumbnail_mpp: float,
    bands: np.ndarray,
    band_cell_um: float,
    outlines_um: Sequence[np.ndarray],
    *,
    band_limits: Sequence[float],
    headline: str,
    max_side: int = 1024,
) -> bytes:
    """Render the preview PNG (:func:`heatmap_image`, then :func:`finish_preview`).

    Parameters
    ----------
    thumbnail, thumbnail_mpp
        RGB image of the whole slide and its µm/px (origin at the slide origin).
    bands
        ``(3, rows, cols)`` boolean heatmap bands on the classifier patch grid.
    band_cell_um
        Side of one patch in µm.
    outlines_um
        Deposit outlines, ``(N, 2)`` (x, y) µm from the slide origin.
    band_limits, headline
        Legend text: band limits and a one-line summary (class, largest deposit).
    max_side
        Longest side of the image part in pixels.

    Returns
    -------
    bytes
        PNG file content.
    """
    heatmap = heatmap_image(thumbnail, thumbnail_mpp, bands, band_cell_um, max_side=max_side)
    return finish_preview(heatmap, outlines_um, band_limits=band_limits, headline=headline)

"""Preview PNG: thumbnail, band colours where the bands are, legend and disclaimer strip."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dicomnode.pipelines.wsi_two_stage.preview import _overlay, render_preview
from dicomnode.pipelines.wsi_two_stage.seg import BAND_COLOURS, TUMOUR_COLOUR


def test_preview_colours_bands_and_outlines() -> None:
    thumb = np.full((200, 300, 3), 240, np.uint8)  # 8 µm/px, 2.4 x 1.6 mm
    bands = np.zeros((3, 13, 19), bool)  # 128 µm patches
    bands[0, 2, 3] = True  # red patch: thumbnail px rows 32-48, cols 48-64
    bands[2, 10, 15] = True  # blue patch: rows 160-176, cols 240-256
    ring = np.array(
        [[1600.0, 400.0], [2000.0, 400.0], [2000.0, 800.0], [1600.0, 800.0], [1600.0, 400.0]]
    )  # µm -> px 200..250, 50..100
    png = render_preview(
        thumb,
        8.0,
        bands,
        128.0,
        [ring],
        band_limits=(0.5, 0.7, 0.9),
        headline="class micro, largest deposit 0.50 mm",
    )
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert img.shape[1] >= 300 and img.shape[0] > 200  # image + legend strip
    red, blue, plain = img[40, 56], img[168, 248], img[120, 120]
    assert plain.tolist() == [240, 240, 240]
    assert red[0] > red[1] + 60 and red[0] > red[2] + 60
    assert blue[2] > blue[0] + 60 and blue[2] > blue[1] + 60
    assert img[40, 120].tolist() == [240, 240, 240]  # next patch is untouched
    assert tuple(img[75, 200]) == TUMOUR_COLOUR or tuple(img[75, 201]) == TUMOUR_COLOUR
    legend = img[200:]
    reds = np.all(legend == BAND_COLOURS[0], axis=-1).sum()
    assert reds > 50  # the legend swatch; text is drawn in dark red/black
    line = legend[40:]  # the "NOT FOR CLINICAL USE" line is red text
    assert ((line[..., 0] - line[..., 1]) > 80).sum() > 20


def test_preview_downscales_large_thumbnails() -> None:
    thumb = np.full((3000, 1500, 3), 230, np.uint8)
    png = render_preview(
        thumb,
        8.0,
        np.zeros((3, 10, 10), bool),
        2400.0,
        [],
        band_limits=(0.5, 0.7, 0.9),
        headline="none",
        max_side=512,
    )
    img = Image.open(io.BytesIO(png))
    assert img.height == 512 + 64 and img.width == 420  # legend is at least 420 wide


def test_overlay_leaves_pixels_outside_the_bands_untouched() -> None:
    rng = np.random.default_rng(5)
    thumb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    bands = np.zeros((3, 4, 6), bool)
    bands[0, 1, 2] = True  # one cell of 10 x 10 px
    img = np.asarray(_overlay(Image.fromarray(thumb), bands))
    inside = np.zeros((40, 60), bool)
    inside[10:20, 20:30] = True
    assert np.array_equal(img[~inside], thumb[~inside])
    expected = (thumb[inside].astype(float) * 0.55 + np.array(BAND_COLOURS[0], float) * 0.45).astype(np.uint8)
    assert np.array_equal(img[inside], expected)


def test_legend_words_are_readably_spaced() -> None:
    """Pillow's small default font draws a space ~1 px wide ("NOTFORCLINICAL USE")."""
    from PIL import Image, ImageDraw, ImageFont

    from dicomnode.pipelines.wsi_two_stage.preview import _words

    strip = Image.new("RGB", (200, 20), "white")
    _words(ImageDraw.Draw(strip), (2, 2), "largest deposit", (0, 0, 0), ImageFont.load_default())
    ink = (np.asarray(strip) < 128).any(axis=(0, 2))
    columns = np.flatnonzero(ink)
    gaps = np.diff(columns) - 1
    assert gaps.max() >= 4  # a visible gap between the words (Pillow's own space: 2 px)

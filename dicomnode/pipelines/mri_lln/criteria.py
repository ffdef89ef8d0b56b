"""The rules that turn a node's measurements into its status: pure functions (issue 12).

* **The compared value is the shown value.** A short axis is rounded once, half up, to
  :data:`SHOWN_DECIMALS` decimals (0.01 mm: what findings.json and the SR show), and the
  size rule compares that rounded value: a raw 6.997 mm is shown as 7.00 and counts as
  7.00 ≥ 7 (positive). Rounding half up on the decimal form (not Python's ``round`` on the
  binary float) makes 6.995 → 7.00 as a reader would round it.
* **Borderline.** A node whose shown short axis lies within one in-plane pixel (the larger
  of the row and column spacing) of the threshold, inclusive, is *borderline*: one pixel
  more or less at the border of the segmentation flips the size rule, so the reader is told.
* **Minimum node size.** A connected component smaller than the bundle's minimum (volume
  below ``min_node_volume_mm3`` or short axis below ``min_node_short_axis_mm``) is not a
  node: it is listed as *below size* and never changes the patient status.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["SHOWN_DECIMALS", "below_size_reasons", "is_borderline", "shown_mm", "size_status"]

#: Decimals of every length in findings.json and the SR (0.01 mm).
SHOWN_DECIMALS = 2


def _shown(value: float) -> Decimal:
    step = Decimal(1).scaleb(-SHOWN_DECIMALS)
    return Decimal(repr(float(value))).quantize(step, rounding=ROUND_HALF_UP)


def shown_mm(value: float) -> float:
    """``value`` rounded half up to :data:`SHOWN_DECIMALS` decimals, as it is shown."""
    return float(_shown(value))


def size_status(model_class: str, short_mm: float, threshold_mm: float) -> tuple[bool, tuple[str, ...]]:
    """Final status = model-positive OR shown short axis ≥ threshold, with the reasons.

    Parameters
    ----------
    model_class
        ``"positive"`` or ``"negative"`` (majority of the node's voxel labels).
    short_mm
        The measured short axis in mm (rounded here with :func:`shown_mm`).
    threshold_mm
        ``thresholds.short_axis_positive_mm`` of the bundle.
    """
    shown = shown_mm(short_mm)
    reasons: tuple[str, ...] = ("model-positive",) if model_class == "positive" else ()
    if shown >= threshold_mm:
        reasons += (f"short-axis>={threshold_mm:g}mm",)
    if reasons:
        return True, reasons
    return False, ("model-negative", f"short-axis<{threshold_mm:g}mm")


def is_borderline(short_mm: float, threshold_mm: float, pixel_mm: float) -> bool:
    """True when the shown short axis is within one in-plane pixel of the threshold.

    Parameters
    ----------
    short_mm
        The measured short axis in mm (rounded here with :func:`shown_mm`).
    threshold_mm
        The size threshold in mm.
    pixel_mm
        The in-plane pixel size in mm (the larger of row and column spacing).
    """
    return abs(_shown(short_mm) - Decimal(repr(float(threshold_mm)))) <= _shown(pixel_mm)


def below_size_reasons(
    volume_mm3: float, short_mm: float, min_volume_mm3: float, min_short_mm: float
) -> tuple[str, ...]:
    """Why a component is too small to be a node; empty when it is not.

    Parameters
    ----------
    volume_mm3, short_mm
        The component's volume and measured short axis.
    min_volume_mm3, min_short_mm
        The bundle's ``thresholds.min_node_volume_mm3`` and ``min_node_short_axis_mm``.
    """
    reasons: tuple[str, ...] = ()
    if volume_mm3 < min_volume_mm3:
        reasons += (f"volume<{min_volume_mm3:g}mm3",)
    if shown_mm(short_mm) < min_short_mm:
        reasons += (f"short-axis<{min_short_mm:g}mm",)
    return reasons

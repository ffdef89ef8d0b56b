"""Decides when a series is complete. Pure logic with an injectable clock.

A series is complete when the data says so (after a short settle time), or after
``quiet_s`` without new instances, or ``max_wait_s`` after its first instance — never on
association release, since one series may arrive over several associations.

Data-based completeness:

* MR Image: ``ImagesInAcquisition`` distinct slice positions received.
* Enhanced MR: one multi-frame instance carries the whole series.
* VL WSI: every VOLUME level received has all its tiles (TILED_FULL: the frame count of
  ``ceil(TPM / tile)`` per plane), the smallest level fits in one tile (the pyramid has
  reached its top) and the largest level is not ``RESAMPLED`` (the base is here). A
  converter that marks every level ``NONE`` cannot reveal a missing base: such slides
  complete early only if the base arrives before the top levels, else by quiet period.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomnode.dicom.headers import ENHANCED_MR_SOP_CLASS, WSI_SOP_CLASS, InstanceInfo

__all__ = ["Assembler", "SeriesState", "data_complete"]

#: Seconds to wait after the data says "complete" (lets duplicates and labels land).
SETTLE_S = 1.0


@dataclass
class SeriesState:
    """What is known about one incoming series."""

    series_uid: str
    first_seen: float
    last_seen: float
    instances: dict[str, InstanceInfo] = field(default_factory=dict)


def _mr_complete(infos: list[InstanceInfo]) -> bool:
    expected = {i.images_in_acquisition for i in infos if i.images_in_acquisition}
    if len(expected) != 1:
        return False
    positions = {i.position for i in infos if i.position is not None}
    return len(positions) == expected.pop() and len(positions) == len(infos)


def _wsi_complete(infos: list[InstanceInfo]) -> bool:
    frames_by_level: dict[tuple[int, int], int] = {}
    need_by_level: dict[tuple[int, int], int] = {}
    for info in infos:
        if "VOLUME" not in info.image_type or info.tpm is None or not info.tile or 0 in info.tile:
            continue
        need = math.ceil(info.tpm[0] / info.tile[0]) * math.ceil(info.tpm[1] / info.tile[1]) * info.planes
        if not info.tiled_full:
            return False  # sparse tiling: positions unknown without reading the frame table
        need_by_level[info.tpm] = need
        frames_by_level[info.tpm] = frames_by_level.get(info.tpm, 0) + info.frames
    if not need_by_level:
        return False
    smallest = min(need_by_level, key=lambda tpm: tpm[0] * tpm[1])
    largest = max(need_by_level, key=lambda tpm: tpm[0] * tpm[1])
    base_types = {i.image_type for i in infos if i.tpm == largest}
    if any(t.endswith("RESAMPLED") for t in base_types):
        return False  # the largest level received was resampled from a base not yet here
    top_reached = need_by_level[smallest] // max(1, _planes(infos, smallest)) == 1
    return top_reached and all(frames_by_level[t] >= n for t, n in need_by_level.items())


def _planes(infos: list[InstanceInfo], tpm: tuple[int, int]) -> int:
    return next((i.planes for i in infos if i.tpm == tpm), 1)


def data_complete(infos: list[InstanceInfo]) -> bool:
    """Whether the received instances form a complete series by their own description."""
    if not infos:
        return False
    classes = {i.sop_class_uid for i in infos}
    if classes == {WSI_SOP_CLASS}:
        return _wsi_complete(infos)
    if classes == {ENHANCED_MR_SOP_CLASS}:
        return len(infos) == 1 and infos[0].frames > 1
    return _mr_complete(infos)


class Assembler:
    """Tracks incoming series and reports the complete ones.

    Parameters
    ----------
    quiet_s
        Complete after this many seconds without a new instance.
    max_wait_s
        Complete at the latest this long after the first instance.
    clock
        Time source (``time.monotonic`` by default; tests inject their own).
    """

    def __init__(self, quiet_s: float, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet_s, self.max_wait_s, self.clock = quiet_s, max_wait_s, clock
        self._series: dict[str, SeriesState] = {}
        self._lock = threading.Lock()

    def add(self, info: InstanceInfo) -> None:
        """Record a durable instance (called under the spool's series lock)."""
        now = self.clock()
        with self._lock:
            state = self._series.setdefault(info.series_uid, SeriesState(info.series_uid, now, now))
            state.last_seen = now
            state.instances[info.sop_instance_uid] = info

    def restore(self, series_uid: str, infos: list[InstanceInfo], age_s: float) -> None:
        """Re-create state after a restart; ``age_s`` = time since the last arrival."""
        now = self.clock()
        state = SeriesState(series_uid, now - age_s, now - age_s, {i.sop_instance_uid: i for i in infos})
        with self._lock:
            self._series[series_uid] = state

    def pending(self) -> int:
        with self._lock:
            return len(self._series)

    def due(self) -> list[tuple[str, str]]:
        """Pop and return ``(series_uid, reason)`` of every series that is complete now."""
        now, done = self.clock(), []
        with self._lock:
            for uid, state in list(self._series.items()):
                reason = self._reason(state, now)
                if reason:
                    done.append((uid, reason))
                    del self._series[uid]
        return done

    def _reason(self, state: SeriesState, now: float) -> str:
        idle = now - state.last_seen
        if idle >= SETTLE_S and data_complete(list(state.instances.values())):
            return f"data complete ({len(state.instances)} instances)"
        if idle >= self.quiet_s:
            return f"quiet for {idle:.0f} s ({len(state.instances)} instances)"
        if now - state.first_seen >= self.max_wait_s:
            return f"max wait {self.max_wait_s:.0f} s reached ({len(state.instances)} instances)"
        return ""

    def discard(self, series_uid: str) -> None:
        """Drop state for a series that is being moved (call under the series lock)."""
        with self._lock:
            self._series.pop(series_uid, None)

"""Process metrics in the Prometheus text format (no client library needed).

Counters and gauges with optional labels, plus summaries (sum and count) for durations.
"""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["Metrics"]

_HELP = {
    "dicomnode_instances_received_total": ("counter", "Instances stored durably and acknowledged"),
    "dicomnode_instances_refused_total": ("counter", "C-STORE requests answered with a failure status"),
    "dicomnode_associations_rejected_total": ("counter", "Associations rejected by the allowlist"),
    "dicomnode_series_completed_total": ("counter", "Series found complete by the assembler"),
    "dicomnode_series_unmatched_total": ("counter", "Completed series no route matched"),
    "dicomnode_jobs": ("gauge", "Jobs by state"),
    "dicomnode_jobs_refused_total": ("counter", "Jobs whose input the guard refused, by route and failed requirement"),
    "dicomnode_pipeline_seconds": ("summary", "Pipeline run time per job"),
    "dicomnode_worker_crashes_total": ("counter", "Worker processes that died while running a job"),
    "dicomnode_send_attempts_total": ("counter", "Output send attempts by destination"),
    "dicomnode_send_failures_total": ("counter", "Failed output send attempts by destination"),
    "dicomnode_queue_messages": ("gauge", "Scale-out: jobs waiting per RabbitMQ queue (dead letters included)"),
    "dicomnode_outbox_jobs": ("gauge", "Scale-out: jobs created but not yet confirmed published (broker away?)"),
    "dicomnode_jobs_dead_lettered_total": ("counter", "Scale-out: jobs the queue dead-lettered (dispatcher)"),
    "dicomnode_worker_running_jobs": ("gauge", "Scale-out: jobs this worker runs now (0 or 1)"),
}


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class Metrics:
    """Thread-safe metric store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._sums: dict[str, dict[tuple[tuple[str, str], ...], tuple[float, int]]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Increase a counter."""
        with self._lock:
            series = self._values[name]
            series[_key(labels)] = series.get(_key(labels), 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        with self._lock:
            self._values[name][_key(labels)] = value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Add one observation to a summary."""
        with self._lock:
            total, count = self._sums[name].get(_key(labels), (0.0, 0))
            self._sums[name][_key(labels)] = (total + seconds, count + 1)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter/gauge (0 when never set)."""
        with self._lock:
            return self._values[name].get(_key(labels), 0.0)

    def render(self) -> str:
        """Prometheus exposition text."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(_HELP) | set(self._values) | set(self._sums)):
                kind, text = _HELP.get(name, ("untyped", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for key, value in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
                for key, (total, count) in sorted(self._sums.get(name, {}).items()):
                    lines += [f"{name}_sum{_labels(key)} {total:.6f}", f"{name}_count{_labels(key)} {count}"]
        return "\n".join(lines) + "\n"


def _labels(key: tuple[tuple[str, str], ...]) -> str:
    if not key:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in key)
    return "{" + inner + "}"

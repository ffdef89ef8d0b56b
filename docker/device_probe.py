"""Report the compute device and ONNX Runtime providers this container actually gets.

Prints one JSON log line, e.g. ::

    {"event": "device_probe", "torch_device": "cuda:0", "gpu": "NVIDIA H100 80GB HBM3",
     "onnx_providers_available": ["CUDAExecutionProvider", "CPUExecutionProvider"],
     "onnx_providers_used": ["CUDAExecutionProvider", "CPUExecutionProvider"], ...}

``onnx_providers_used`` comes from ``InferenceSession.get_providers()`` on the first
``*.onnx`` file under the models folder, so a CUDA provider that is installed but cannot
load its libraries shows up as missing there. The requested device and providers are read
like the node reads them: ``DICOMNODE_WORKER__DEVICE`` / ``DICOMNODE_WORKER__ONNX_PROVIDERS``
(comma-separated), else ``worker.device`` / ``worker.onnx_providers`` in the config file.

Exit status: 0; 2 when ``--require-cuda`` is given and either torch or ONNX Runtime is not
on CUDA (use it to check a GPU deployment: ``docker run --gpus all IMAGE device-probe
--require-cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _worker_settings(config_path: str) -> tuple[str, list[str]]:
    worker: dict[str, Any] = {}
    try:
        import yaml

        with open(config_path, encoding="utf-8") as fh:
            worker = (yaml.safe_load(fh) or {}).get("worker") or {}
    except (OSError, ValueError):
        pass
    device = os.environ.get("DICOMNODE_WORKER__DEVICE", worker.get("device", "auto"))
    env_providers = os.environ.get("DICOMNODE_WORKER__ONNX_PROVIDERS")
    if env_providers:
        providers = [p.strip() for p in env_providers.strip("[]").split(",") if p.strip()]
    else:
        providers = list(
            worker.get("onnx_providers") or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    return str(device), providers


def _torch_report(requested: str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        device = "unavailable (device: cuda requested, no CUDA device visible)"
    else:
        device = "cuda:0" if cuda and requested in ("auto", "cuda") else "cpu"
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "torch_device": device,
    }
    if cuda:
        report["gpu"] = torch.cuda.get_device_name(0)
        report["gpu_count"] = torch.cuda.device_count()
    return report


def _onnx_report(requested: list[str], models: Path) -> dict[str, Any]:
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu: load CUDA/cuDNN from the nvidia-* wheels torch installed.
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 (report, don't fail the probe)
            print(f"onnxruntime.preload_dlls failed: {exc}", file=sys.stderr)
    available = ort.get_available_providers()
    report: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "onnx_providers_available": available,
        "onnx_providers_requested": requested,
    }
    candidates = sorted(models.rglob("*.onnx")) if models.is_dir() else []
    if not candidates:
        report["onnx_providers_used"] = None
        report["onnx_probe_model"] = f"no *.onnx under {models}"
        return report
    usable = [p for p in requested if p in available] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(candidates[0]), providers=usable)
    report["onnx_probe_model"] = str(candidates[0])
    report["onnx_providers_used"] = session.get_providers()
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the probe and print the JSON line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="device-probe", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.environ.get("DICOMNODE_CONFIG",
                                                           "/config/dicomnode.yaml"))
    parser.add_argument("--models", default="/models", type=Path)
    parser.add_argument("--require-cuda", action="store_true",
                        help="exit 2 unless torch and ONNX Runtime both run on CUDA")
    args = parser.parse_args(argv)
    started = time.monotonic()
    device, providers = _worker_settings(args.config)
    report: dict[str, Any] = {"event": "device_probe", "device_setting": device}
    report.update(_torch_report(device))
    report.update(_onnx_report(providers, args.models))
    report["probe_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(report), flush=True)
    if args.require_cuda:
        used = report.get("onnx_providers_used") or []
        on_cuda = str(report["torch_device"]).startswith("cuda")
        if not on_cuda or "CUDAExecutionProvider" not in used:
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

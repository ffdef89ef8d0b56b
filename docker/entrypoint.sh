#!/bin/sh
# Container entrypoint of dicomnode (runs under tini, which is PID 1).
#
#   <image>                       dicomnode serve --config /config/dicomnode.yaml
#   <image> device-probe          print which device and ONNX Runtime providers are used
#   <image> ARGS...               dicomnode ARGS... (echo, replay, jobs, check-config, ...)
#
# DICOMNODE_DEVICE_PROBE=1 runs the device probe once before `serve` (default in the
# CUDA image), so the container log names the device and providers actually in use.
set -eu
# Spool files: owner and group only (results and received instances carry PHI).
umask 0027

if [ "${1:-}" = "device-probe" ]; then
    shift
    exec python /opt/dicomnode/device_probe.py "$@"
fi
if [ "${1:-}" = "serve" ] && [ "${DICOMNODE_DEVICE_PROBE:-0}" = "1" ]; then
    python /opt/dicomnode/device_probe.py || echo "device probe failed (see above); starting anyway" >&2
fi
# exec: dicomnode replaces this shell, so tini's SIGTERM reaches it directly.
exec dicomnode "$@"

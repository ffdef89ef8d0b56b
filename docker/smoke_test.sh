#!/usr/bin/env bash
# Smoke test of the dicomnode container image (make test-image).
#
# 0. `check-config` inside the image: embedded config + bundled demo models are usable;
# 1. start IMAGE with the container test config (docker/config, read-only) and a spool
#    folder as the /spool volume, host networking on free ports;
# 2. wait for /healthz, run the image's HEALTHCHECK, C-ECHO the node from the host;
# 3. replay a synthetic T2 MR study into it (`dicomnode replay` from the host venv) and
#    wait for the results in the outbox (/spool/outbox);
# 4. check a SEG and an SR came out and reference the study; no PHI in the container log;
# 5. check every process in the container runs as non-root, spool files are not
#    world-readable;
# 6. `podman stop` (SIGTERM): the node drains and exits 0 within the stop timeout.
#
# Exits non-zero on the first failed check. Environment: IMAGE, CONTAINER (podman),
# HOST_VENV (.venv), STOP_TIMEOUT (30), RESULT_TIMEOUT (900), KEEP (1 = keep work dir).
set -euo pipefail

CONTAINER=${CONTAINER:-podman}
IMAGE=${IMAGE:-localhost/dicomnode:latest}
HOST_VENV=${HOST_VENV:-.venv}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
RESULT_TIMEOUT=${RESULT_TIMEOUT:-900}
PY="$HOST_VENV/bin/python"
DICOMNODE="$HOST_VENV/bin/dicomnode"
UID_IN_IMAGE=10001

t0=$(date +%s)
step() { printf '[smoke %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }

[ -x "$DICOMNODE" ] || fail "$DICOMNODE not found: create the host venv first (pip install -e .)"
$CONTAINER image exists "$IMAGE" || fail "image $IMAGE not found: run make image first"

work=$(mktemp -d /tmp/dicomnode-smoke.XXXXXX)
cid=""
cleanup() {
    if [ -n "$cid" ]; then
        if [ "${KEEP:-0}" = 1 ] || [ "${ok:-0}" != 1 ]; then
            $CONTAINER logs "$cid" > "$work/container.log" 2>&1 || true
            echo "[smoke] container log: $work/container.log" >&2
        fi
        $CONTAINER rm -f -t 1 "$cid" >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-0}" != 1 ] && [ "${ok:-0}" = 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

read -r DICOM_PORT HTTP_PORT < <("$PY" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# The spool is a host folder owned by the image's user, like a volume on a real host.
mkdir -p "$work/spool" "$work/study"
chown "$UID_IN_IMAGE:$UID_IN_IMAGE" "$work/spool"
chmod 0750 "$work/spool"

step "the image's own config and bundled demo models pass check-config"
$CONTAINER run --rm "$IMAGE" check-config /config/dicomnode.yaml > "$work/check-config.txt" 2>&1 \
    || fail "check-config in the image: $(grep -v systemd "$work/check-config.txt" | tail -5)"
tail -1 "$work/check-config.txt"

step "start $IMAGE (DICOM :$DICOM_PORT, HTTP :$HTTP_PORT)"
cid=$($CONTAINER run -d --name "dicomnode-smoke-$$" --network host \
    -v "$PWD/docker/config:/config:ro" -v "$work/spool:/spool" \
    -e DICOMNODE_NODE__PORT="$DICOM_PORT" -e DICOMNODE_HTTP__PORT="$HTTP_PORT" \
    -e DICOMNODE_HTTP__HOST=127.0.0.1 -e DICOMNODE_ASSEMBLY__QUIET_S=3 \
    --stop-timeout "$STOP_TIMEOUT" "$IMAGE" 2> >(grep -v 'systemd' >&2))

step "wait for /healthz"
healthy=0
for _ in $(seq 240); do
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$HTTP_PORT/healthz', timeout=2)" 2>/dev/null; then
        healthy=1; break
    fi
    [ "$($CONTAINER inspect -f '{{.State.Running}}' "$cid")" = true ] || fail "container exited: $($CONTAINER logs --tail 30 "$cid" 2>&1)"
    sleep 0.5
done
[ "$healthy" = 1 ] || fail "/healthz did not answer within 120 s"
$CONTAINER healthcheck run "$cid" || fail "image HEALTHCHECK reports unhealthy"
echo "HEALTHCHECK: $($CONTAINER inspect -f '{{.State.Health.Status}}' "$cid")"

step "C-ECHO from the host"
"$DICOMNODE" echo "127.0.0.1:$DICOM_PORT" || fail "C-ECHO failed"

step "generate a synthetic T2 MR study"
"$PY" -c "from dicomnode.synth.mr import generate_case; generate_case(11).write('$work/study')"
n_in=$(find "$work/study" -type f | wc -l)
[ "$n_in" -gt 0 ] || fail "synthetic study is empty"

step "replay $n_in instances into the container, wait for results (<= ${RESULT_TIMEOUT}s)"
"$DICOMNODE" replay "$work/study" --to "127.0.0.1:$DICOM_PORT" \
    --wait-results "$work/spool/outbox" --timeout "$RESULT_TIMEOUT" || fail "replay failed"

step "check SEG + SR in the outbox"
"$PY" - "$work/study" "$work/spool/outbox" <<'EOF' || fail "outputs missing or wrong"
import sys
from pathlib import Path
import pydicom

study, outbox = Path(sys.argv[1]), Path(sys.argv[2])
src = pydicom.dcmread(next(p for p in sorted(study.rglob("*")) if p.is_file()),
                      stop_before_pixels=True)
found = {}
for path in sorted(outbox.rglob("*")):
    if not path.is_file():
        continue
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        continue
    if ds.get("StudyInstanceUID") != src.StudyInstanceUID:
        continue
    found.setdefault(ds.Modality, []).append(path.relative_to(outbox))
print("outputs:", {k: [str(p) for p in v] for k, v in found.items()})
missing = {"SEG", "SR"} - set(found)
if missing:
    sys.exit(f"no {', '.join(sorted(missing))} for study {src.StudyInstanceUID} in {outbox}")
EOF

# Informational: the container's peak memory so far (cgroup; includes page cache).
cg=$($CONTAINER inspect -f '{{.State.CgroupPath}}' "$cid" 2>/dev/null || true)
for f in "/sys/fs/cgroup/memory$cg/memory.max_usage_in_bytes" "/sys/fs/cgroup$cg/memory.peak"; do
    if [ -n "$cg" ] && [ -r "$f" ]; then
        echo "container peak memory: $(( $(cat "$f") / 1048576 )) MiB"; break
    fi
done

step "no PHI in the container log"
phi=$("$PY" - "$work/study" <<'EOF'
import sys
from pathlib import Path
import pydicom
ds = pydicom.dcmread(next(p for p in sorted(Path(sys.argv[1]).rglob("*")) if p.is_file()),
                     stop_before_pixels=True)
values = [str(ds.get(k, "")) for k in ("PatientName", "PatientID", "PatientBirthDate")]
print("\n".join(v for v in values if len(v) >= 4))
EOF
)
logs=$($CONTAINER logs "$cid" 2>&1)
while IFS= read -r value; do
    [ -z "$value" ] && continue
    if grep -qF -- "$value" <<<"$logs"; then fail "container log contains PHI value '$value'"; fi
done <<<"$phi"

step "non-root: processes and spool files"
procs=$($CONTAINER top "$cid" huser user pid args 2> >(grep -v 'level=' >&2))
echo "$procs"
[ "$(awk 'NR > 1' <<<"$procs" | wc -l)" -ge 2 ] || fail "podman top listed no processes"
if awk 'NR > 1 && ($1 == "0" || $1 == "root" || $2 == "root")' <<<"$procs" | grep -q .; then
    fail "a process runs as root"
fi
[ "$($CONTAINER exec "$cid" id -u)" = "$UID_IN_IMAGE" ] || fail "exec user is not $UID_IN_IMAGE"
world=$(find "$work/spool" -perm -o=r ! -type l | head -5)
[ -z "$world" ] || fail "world-readable spool entries: $world"
bad_owner=$(find "$work/spool" ! -uid "$UID_IN_IMAGE" | head -5)
[ -z "$bad_owner" ] || fail "spool entries not owned by uid $UID_IN_IMAGE: $bad_owner"

step "podman stop (SIGTERM, timeout ${STOP_TIMEOUT}s)"
s0=$(date +%s.%N)
# (podman without systemd reports it cannot remove the healthcheck timer: not an error)
stop_err=$($CONTAINER stop -t "$STOP_TIMEOUT" "$cid" 2>&1 >/dev/null | grep -v 'systemd') || true
s1=$(date +%s.%N)
stop_s=$("$PY" -c "print(round($s1 - $s0, 2))")
code=$($CONTAINER inspect -f '{{.State.ExitCode}}' "$cid")
echo "stopped in ${stop_s}s, exit code $code ${stop_err:+($stop_err)}"
if grep -qi sigkill <<<"$stop_err"; then fail "podman had to SIGKILL the node"; fi
"$PY" -c "import sys; sys.exit($stop_s >= $STOP_TIMEOUT)" || fail "stop took ${stop_s}s (timeout ${STOP_TIMEOUT}s)"
[ "$($CONTAINER inspect -f '{{.State.Running}}' "$cid")" = false ] || fail "still running after stop"
[ "$code" = 0 ] || fail "exit code $code after SIGTERM (expected 0: clean drain)"

ok=1
step "PASS"

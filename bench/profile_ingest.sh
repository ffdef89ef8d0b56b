#!/usr/bin/env bash
# Where a receiving node spends its CPU (issue 11's profile), reproducible:
#   .venv/bin/pip install py-spy   # a profiler, not a project dependency
#   unshare -n bash -c 'ip link set lo up && bash bench/profile_ingest.sh'
# 1. user/sys CPU of `dicomnode serve` for 1,000 MR instances (384², one storescu association),
#    once per spool.sync mode; 2. a py-spy --gil profile (GIL-holding Python) of 600 instances,
#    summarised by function (inclusive samples at 500 Hz) into bench/results/ingest-profile.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYSPY=${PYSPY:-$(dirname "$PY")/py-spy}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
$PY -c "import pathlib, sys; sys.path.insert(0, '.'); from bench.ingest import make_mr; make_mr(pathlib.Path('$D/mr'), 1000, 384)"
serve() {  # $1 = spool.sync mode; sets P to the node's pid
  cat > "$D/c.yaml" <<YAML
node: {port: 11300}
spool: {path: $D/spool-$1, min_free_mb: 64, sync: $1}
assembly: {quiet_s: 3600, max_wait_s: 7200}
http: {port: 0}
routes: []
log: {level: WARNING}
YAML
  $PY -m dicomnode serve --config "$D/c.yaml" >/dev/null 2>&1 & P=$!
  for _ in $(seq 100); do echoscu -aec DICOMNODE 127.0.0.1 11300 2>/dev/null && return; sleep 0.3; done
}
for mode in syncfs fsync; do
  serve $mode
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$P/stat); t0=$(date +%s.%N)
  TCP_NODELAY=1 storescu -R -xy -aec DICOMNODE 127.0.0.1 11300 "$D/mr/" +sd
  t1=$(date +%s.%N); read -r u1 s1 < <(awk '{print $14, $15}' /proc/$P/stat)
  tck=$(getconf CLK_TCK)
  echo "spool.sync $mode: 1000 instances in $(echo "$t1 - $t0" | bc) s; user $(( (u1-u0)*1000/tck )) ms, sys $(( (s1-s0)*1000/tck )) ms"
  kill $P; wait $P || true
done
serve syncfs
mkdir -p bench/results
"$PYSPY" record --gil -r 500 -p $P -o "$D/flame.txt" -f raw -d 60 --nonblocking >/dev/null 2>&1 & S=$!
sleep 1
ls "$D"/mr/*.dcm | head -600 | xargs env TCP_NODELAY=1 storescu -R -xy -aec DICOMNODE 127.0.0.1 11300
kill -INT $S; wait $S || true
kill $P; wait $P || true
$PY - "$D/flame.txt" <<'PYEOF' | tee bench/results/ingest-profile.txt
import collections, sys
total, samples = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, count = line.rsplit(" ", 1)
    samples += int(count)
    for frame in {f.split(" (")[0] for f in stack.split(";")}:
        total[frame] += int(count)
print(f"{samples} GIL samples at 500 Hz for 600 instances = {samples / 500 / 600 * 1000:.2f} ms per instance")
for frame, count in total.most_common(40):
    print(f"{count:6d} {count / 500 / 600 * 1000:6.3f} ms/inst  {frame}")
PYEOF

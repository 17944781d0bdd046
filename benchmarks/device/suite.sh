#!/usr/bin/env bash
# The device suite: rayac's claims at scale, measured in one call on the 16-core GPU machine (no network).
#
#   bash benchmarks/device/suite.sh [--bundle FILE] [--out DIR] [--budget SECONDS]   # on the device: ~540 s
#   bash benchmarks/device/suite.sh --smoke [--bundle FILE] [--out DIR]             # here / in CI: ~2 min
#
# It unpacks the bundle (benchmarks/device/bundle.sh) into a temporary site dir, puts only that on PYTHONPATH,
# prints versions, cores and GPU, then runs each row under its own time cap so one failure costs only itself:
#   env   versions, nproc, GPU, does Ray start                                      -> env.json
#   a3c   A3C CartPole: env steps/s, pushes/s, staleness; 1,2,4,8,16 workers x K=1,4 -> a3c.json
#   ps    A3C parameter server: pushes/s of K=1,2,4 shards against K bare calls, 1 and 8 in flight -> ps.json
#   atari raw envpool (random actions) vs rayac Pong, 16 workers, CUDA learner      -> atari.json
#   pong  Pong learning for the time left: score against wall time, time to +18     -> pong.json
# If Ray does not start, the rows that need it say so and the in-process rows still run.
# Results: at most 7 small files in --out (default $OUT, the device tool's folder): suite.log, suite.json and the
# five above. Fold them into benchmarks/RESULTS.md and the README with: python benchmarks/device/merge.py DIR
#
# --smoke runs every row with tiny budgets on this machine, from a bundle built for this machine's Python
# (bundle.sh --python-version 3.11 --fast), under a bare interpreter whose only packages are the bundle and a
# stand-in for the device image (devbase.py): the project's venv is not on the path.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
smoke=0 bundle="" out="${OUT:-}" budget=540
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; shift ;;
    --bundle) bundle="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$bundle" ]; then
  if [ "$smoke" = 1 ]; then
    bundle="$here/build/bundle-cp$(python3 -c 'import sys; print("%d%d" % sys.version_info[:2])').tar.xz"
  else
    bundle="$here/build/bundle-cp312.tar.xz"
  fi
fi
if [ ! -f "$bundle" ]; then
  echo "suite.sh: --bundle: no archive at $bundle (build it with benchmarks/device/bundle.sh)" >&2
  exit 2
fi
[ -n "$out" ] || out="$(mktemp -d /tmp/rayac-suite.XXXX)"
mkdir -p "$out"
work="$(mktemp -d /tmp/rdev.XXXX)"  # short: Ray's socket paths must stay under 107 characters
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
exec > >(tee -a "$out/suite.log") 2>&1

echo "== rayac device suite $(date -u +%FT%TZ) smoke=$smoke budget=${budget}s bundle=$bundle"
site="$work/site"
mkdir -p "$site"
# Python's own tarfile/lzma: no dependency on an xz binary there; modes kept (raylet, gcs_server are executables).
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], **({"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}))' \
  "$bundle" "$site" || { echo "suite.sh: cannot unpack $bundle" >&2; exit 1; }
if [ "$smoke" = 1 ]; then
  # A bare interpreter (no site packages of its own) + the bundle + a stand-in for the device image.
  venv_py="${RAYAC_VENV_PYTHON:-$root/.venv/bin/python}"
  base_py="$("$venv_py" -c 'import sys; print(sys._base_executable)')"
  "$base_py" -m venv --without-pip "$work/py" || exit 1
  "$venv_py" "$here/devbase.py" "$work/devbase" || exit 1
  py="$work/py/bin/python"
  export PYTHONPATH="$site:$work/devbase"
else
  py="${PYTHON:-python3}"
  export PYTHONPATH="$site"
fi
export RAY_TMPDIR="$work/ray" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$RAY_TMPDIR"
cd "$work"  # not the checkout: rayac must come from the bundle
echo "python: $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')  nproc: $(nproc)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

flag=""
[ "$smoke" = 1 ] && flag="--smoke"
status=()
row() {  # row NAME CAP_SECONDS [ARGS...]: one row under its own cap; its exit code is recorded, not fatal
  local name="$1" cap="$2" t0=$SECONDS rc
  shift 2
  echo "== row $name (cap ${cap}s)"
  timeout --kill-after=15 "$cap" "$py" "$here/suite.py" "$name" --out "$out" $flag "$@"
  rc=$?
  [ $rc = 124 ] && echo "== row $name: stopped at its ${cap}s cap (what it measured so far is kept)"
  echo "== row $name: rc=$rc in $((SECONDS - t0))s"
  status+=("\"$name\": {\"rc\": $rc, \"seconds\": $((SECONDS - t0))}")
}

if [ "$smoke" = 1 ]; then
  row env 90
  row a3c 120
  row ps 90
  row atari 120
  row pong 120
else
  row env 60
  row a3c 140
  row ps 75
  row atari 100
  left=$((budget - SECONDS - 45))  # Ray and the workers start inside the cap; the rest is learning
  [ $left -lt 30 ] && left=30
  row pong $((left + 40)) --seconds "$left"
fi
joined="$(IFS=,; echo "${status[*]}")"
printf '{"smoke": %s, "wall_s": %d, "rows": {%s}}\n' "$([ "$smoke" = 1 ] && echo true || echo false)" \
  "$SECONDS" "$joined" > "$out/suite.json"
echo "== done in ${SECONDS}s; results in $out: $(cd "$out" && ls | tr '\n' ' ')"

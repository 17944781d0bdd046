#!/usr/bin/env bash
# Build, here, the one archive the device suite needs: what the GPU machine's python3 (3.12, torch with CUDA, no
# network) lacks — Ray slimmed, envpool's Atari engine, ale-py with its ROMs, gymnasium, pydantic — plus rayac.
#
#   benchmarks/device/bundle.sh                         # cp312 manylinux x86_64: the device's Python
#   benchmarks/device/bundle.sh --python-version 3.11 --fast   # this machine's Python: the smoke bundle
#
# Options: --python-version X.Y (default 3.12), --out DIR (default benchmarks/device/build, git-ignored),
# --fast (xz preset 0: quick to build, larger), --limit-mib N (default 60).
# Prints the archive's size and fails above the limit. Versions are pinned in requirements.txt; pip downloads
# exactly those wheels (--no-deps, binary only), so the same pins give the same archive.
# Then, with the device tool: carry the archive alone (benchmarks/device/build/bundle-cp312.tar.xz) and run
#   bash benchmarks/device/suite.sh --bundle benchmarks/device/build/bundle-cp312.tar.xz
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
pyver=3.12 out="$here/build" fast="" limit=60
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) pyver="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) fast="--fast"; shift ;;
    --limit-mib) limit="$2"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bundle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$pyver" in
  3.[0-9] | 3.[0-9][0-9]) ;;
  *) echo "bundle.sh: --python-version: expected X.Y such as 3.12, got '$pyver'" >&2; exit 2 ;;
esac
tag="cp${pyver/./}"
py="${PYTHON:-python3}"
mkdir -p "$out"
wheels="$out/wheels-$tag"
mkdir -p "$wheels"
# manylinux tags are matched exactly: list the glibc versions the pinned wheels are published for.
platforms=()
for n in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do platforms+=(--platform "manylinux_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^\s*#' "$here/requirements.txt" | grep -v '^\s*$' > "$out/requirements-$tag.txt"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$pyver" --implementation cp "${platforms[@]}" \
  -r "$out/requirements-$tag.txt" -d "$wheels" 2> >(grep -v 'is ignored: it is neither a file nor' >&2)
# A wheel left from an older pin would be unpacked too: keep exactly the pinned ones.
"$py" - "$wheels" "$out/requirements-$tag.txt" <<'EOF'
import re, sys
from pathlib import Path
wheels, reqs = Path(sys.argv[1]), Path(sys.argv[2]).read_text().split()
want = {(re.sub(r"[-_.]+", "_", n).lower(), v) for n, v in (r.split("==") for r in reqs)}
for w in wheels.glob("*.whl"):
    name, version = w.name.split("-")[:2]
    if (re.sub(r"[-_.]+", "_", name).lower(), version) not in want:
        w.unlink()
found = len(list(wheels.glob("*.whl")))
if found != len(want):
    sys.exit(f"bundle.sh: {found} wheels for {len(want)} pins in {wheels}")
EOF
"$py" "$here/slim.py" --wheels "$wheels" --rayac "$root" --out "$out/bundle-$tag.tar.xz" --limit-mib "$limit" $fast

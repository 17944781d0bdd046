"""Turn downloaded wheels into the device bundle: unpack, slim, add rayac, pack one reproducible tar.xz.

Called by bundle.sh; standard library only, so any python3 >= 3.10 runs it.

    python slim.py --wheels DIR --rayac REPO_ROOT --out FILE.tar.xz [--fast] [--limit-mib 60]

What goes (the suite needs none of it, and the archive must fit with the working tree in 64 MiB):
- ray: jars/ (Java workers), rllib/, llm/, data/, train/, tune/, serve/, workflow/, the dashboard's built web client,
  and every __pycache__;
- envpool: every engine but Atari, and envpool_assets' non-Atari assets; ``envpool/entry.py`` is rewritten to
  register Atari alone (the original imports every engine's registration);
- all ``*.dist-info/RECORD`` stay (importlib.metadata reads versions from the dist-info folders).

The archive is reproducible: members sorted, mtime 0, uid/gid 0, no user names.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

RAY_DROP = ["jars", "rllib", "llm", "data", "train", "tune", "serve", "workflow", "dashboard/client"]
ENVPOOL_KEEP = {"__init__.py", "entry.py", "registration.py", "python", "atari", "py.typed"}
ENVPOOL_ASSETS_KEEP = {"__init__.py", "atari"}
ENVPOOL_ENTRY = '''"""Entry point for envpool's registrations: Atari alone (rayac's device bundle keeps only that engine)."""

import envpool.atari.registration  # noqa: F401
'''


def unpack_wheels(wheels: Path, site: Path) -> list[str]:
    names = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                path = Path(zf.extract(info, site))
                mode = (info.external_attr >> 16) & 0o777  # zipfile drops the exec bits (raylet, gcs_server)
                if mode and not info.is_dir():
                    path.chmod(mode)
        names.append(wheel.name)
    # A wheel's <name>.data/{purelib,platlib} belong in site itself; scripts and headers are not needed.
    for data in site.glob("*.data"):
        for sub in ("purelib", "platlib"):
            if (data / sub).is_dir():
                shutil.copytree(data / sub, site, dirs_exist_ok=True)
        shutil.rmtree(data)
    return names


def slim(site: Path) -> None:
    for rel in RAY_DROP:
        shutil.rmtree(site / "ray" / rel, ignore_errors=True)
    envpool = site / "envpool"
    if envpool.is_dir():
        for child in envpool.iterdir():
            if child.name not in ENVPOOL_KEEP:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        (envpool / "entry.py").write_text(ENVPOOL_ENTRY)
    assets = site / "envpool_assets"
    if assets.is_dir():
        for child in assets.iterdir():
            if child.name not in ENVPOOL_ASSETS_KEEP:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(site / "bin", ignore_errors=True)


def add_rayac(repo: Path, site: Path) -> str:
    """rayac's package as committed plus what is changed in the work tree (git ls-files), and its commit."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "rayac"], cwd=repo,
                           check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    for rel in files:
        src = repo / rel
        if src.is_file():
            dst = site / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "rayac"], cwd=repo, capture_output=True, text=True
    )
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def travel_size(repo: Path) -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                           check=True, capture_output=True).stdout.split(b"\0")  # fmt: skip
    return sum((repo / f.decode()).stat().st_size for f in files if f and (repo / f.decode()).is_file())


def pack(site: Path, out: Path, *, fast: bool) -> int:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(site.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(site)), recursive=False, filter=clean)
    preset = 0 if fast else 9 | lzma.PRESET_EXTREME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(lzma.compress(raw.getvalue(), preset=preset))
    tmp.replace(out)  # never a half-written archive under the real name
    return out.stat().st_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheels", type=Path, required=True)
    p.add_argument("--rayac", type=Path, required=True, help="the repository root (rayac/ is taken from it)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fast", action="store_true", help="xz preset 0 (the smoke bundle: speed over size)")
    p.add_argument("--limit-mib", type=float, default=60.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rayac-bundle-") as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        wheels = unpack_wheels(args.wheels, site)
        if not wheels:
            print(f"slim.py: no wheels in {args.wheels}", file=sys.stderr)
            return 1
        slim(site)
        commit = add_rayac(args.rayac, site)
        manifest = {
            "wheels": wheels,
            "rayac_commit": commit,
            "python_tag": args.wheels.name.rsplit("-", 1)[-1],
        }
        (site / "BUNDLE.json").write_text(json.dumps(manifest, indent=1) + "\n")
        unpacked = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        size = pack(site, args.out, fast=args.fast)
    mib = size / 2**20
    tree = travel_size(args.rayac) / 2**20
    print(f"bundle: {args.out} {mib:.1f} MiB ({unpacked / 2**20:.0f} MiB unpacked, {len(wheels)} wheels, "
          f"rayac {commit})")  # fmt: skip
    print(
        f"travels: working tree {tree:.1f} MiB + bundle {mib:.1f} MiB = {tree + mib:.1f} MiB (the device takes 64)"
    )
    if mib > args.limit_mib:
        print(f"bundle: {mib:.1f} MiB is over the {args.limit_mib:g} MiB limit", file=sys.stderr)
        return 1
    if tree + mib > 64:
        print(
            f"bundle: with the working tree it is {tree + mib:.1f} MiB, over the device's 64 MiB",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

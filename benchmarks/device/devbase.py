"""A stand-in for the device image's own packages, for ``suite.sh --smoke``: a folder of links to exactly the
distributions device_packages.txt names, taken from the Python that runs this (the project's venv).

    .venv/bin/python devbase.py OUT_DIR

With the unpacked bundle first and this folder second on PYTHONPATH, under a bare interpreter with no site
packages of its own, the smoke run sees what the device would: its image plus the bundle, and nothing else.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

LIST = Path(__file__).with_name("device_packages.txt")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    wanted = {
        normal(line.strip()) for line in LIST.read_text().splitlines() if line.strip() and line[0] != "#"
    }
    linked = 0
    for dist in metadata.distributions():
        if normal(dist.metadata["Name"]) not in wanted or not dist.files:
            continue
        site = Path(dist.locate_file(""))
        tops = {f.parts[0] for f in dist.files if f.parts and f.parts[0] not in ("..", "bin")}
        for top in tops:
            src, dst = site / top, out / top
            if src.exists() and not dst.exists() and top != "__pycache__":
                dst.symlink_to(src)
                linked += 1
    print(f"devbase: {linked} entries from {len(wanted)} names in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

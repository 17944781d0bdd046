"""Bounded reads of files that grow while the service reads them (``metrics.jsonl``, driver logs).

A run's files can be hundreds of MB; a request reads a bounded chunk of one, never the whole, so many readers at
once cost a bounded amount of memory each.
"""

from __future__ import annotations

from pathlib import Path

CHUNK_BYTES = 256 * 1024  # one read of metrics.jsonl: a few hundred records
MAX_LINE_BYTES = 16 * 2**20  # a longer "line" is cut there: no record is near it, and memory stays bounded


def iter_new_lines(path: Path, offset: int, *, chunk: int = CHUNK_BYTES) -> tuple[list[str], int]:
    """Complete lines from byte ``offset``, at most about ``chunk`` bytes of them (a partly written last line waits
    for the next call). A single line longer than ``chunk`` is read whole, up to ``MAX_LINE_BYTES``."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return [], offset
    with f:
        f.seek(offset)
        data = f.read(chunk)
        end = data.rfind(b"\n")
        # one long line: read on to its end
        while end < 0 and len(data) >= chunk and len(data) < MAX_LINE_BYTES:
            more = f.read(chunk)
            if not more:
                break
            data += more
            end = data.rfind(b"\n")
        if end < 0 and len(data) >= MAX_LINE_BYTES:
            end = len(data) - 1  # cut an endless line rather than hold it all
    if end < 0:
        return [], offset
    return data[: end + 1].decode(errors="replace").splitlines(), offset + end + 1


def skip_lines(path: Path, count: int) -> tuple[int, int]:
    """(byte offset, lines skipped) after the first ``count`` complete lines: resuming after Last-Event-ID."""
    offset = skipped = 0
    if count <= 0 or not path.exists():
        return offset, skipped
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n") or skipped == count:
                break
            offset += len(line)
            skipped += 1
    return offset, skipped


def read_range(path: Path, *, tail_bytes: int, offset: int | None = None) -> tuple[bytes, int, int]:
    """(bytes, start, file size): the last ``tail_bytes`` of the file (from a line start, unless one line is longer),
    or with ``offset`` the bytes from there, at most ``tail_bytes`` of them. A missing file is empty."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return b"", 0, 0
    with f:
        size = f.seek(0, 2)
        if offset is not None:
            start = min(offset, size)
            f.seek(start)
            return f.read(tail_bytes), start, size
        start = max(0, size - tail_bytes)
        f.seek(start)
        data = f.read(tail_bytes)
    if start > 0:
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            data, start = data[cut + 1 :], start + cut + 1
    return data, start, size


def tail_text(text: str, tail_bytes: int) -> str:
    """The last ``tail_bytes`` of ``text`` (UTF-8), from a line start where one is in reach."""
    data = text.encode(errors="replace")
    if len(data) <= tail_bytes:
        return text
    data = data[-tail_bytes:]
    cut = data.find(b"\n")
    if 0 <= cut < len(data) - 1:
        data = data[cut + 1 :]
    return data.decode(errors="replace")

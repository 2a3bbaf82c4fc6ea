"""Just enough PNG decoding to look at a browser screenshot (8-bit RGB/RGBA, no interlace)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass


@dataclass
class Image:
    width: int
    height: int
    channels: int  # 3 (RGB) or 4 (RGBA)
    rows: list[bytes]

    def count(self, rgb: bytes, below: int = 0) -> int:
        """Pixels of exactly this colour (in the rows from ``below`` down)."""
        return sum(len(_aligned(row, rgb, self.channels)) for row in self.rows[below:])

    def longest_run(self, rgb: bytes, below: int = 0) -> int:
        """The longest horizontal run of this colour, in pixels (a bar, not stray pixels)."""
        best = 0
        for row in self.rows[below:]:
            starts = _aligned(row, rgb, self.channels)
            run = 0
            for i, start in enumerate(starts):
                run = run + 1 if i and start == starts[i - 1] + self.channels else 1
                best = max(best, run)
        return best


    def first_row_with_run(self, rgb: bytes, length: int) -> int:
        """The first row holding ``length`` pixels of this colour side by side."""
        needle = rgb * length
        return next(y for y, row in enumerate(self.rows)
                    if any(start % self.channels == 0 for start in _all(row, needle)))


def _all(row: bytes, needle: bytes) -> list[int]:
    found, start = [], row.find(needle)
    while start >= 0:
        found.append(start)
        start = row.find(needle, start + 1)
    return found


def _aligned(row: bytes, rgb: bytes, channels: int) -> list[int]:
    return [start for start in _all(row, rgb) if start % channels == 0]


def decode(data: bytes) -> Image:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, compressed = 8, bytearray()
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            if depth != 8 or color not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG: depth {depth}, colour type {color}")
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            compressed += chunk
        pos += 12 + length
    raw = zlib.decompress(bytes(compressed))
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        offset = y * (stride + 1)
        line = bytearray(raw[offset + 1:offset + 1 + stride])
        _unfilter(raw[offset], line, previous, channels)
        rows.append(bytes(line))
        previous = line
    return Image(width, height, channels, rows)


def _unfilter(kind: int, line: bytearray, up: bytearray, bpp: int) -> None:
    n = len(line)
    if kind == 1:  # Sub
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif kind == 2:  # Up
        for i in range(n):
            line[i] = (line[i] + up[i]) & 0xFF
    elif kind == 3:  # Average
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + up[i]) >> 1)) & 0xFF
    elif kind == 4:  # Paeth
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = up[i]
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + predictor) & 0xFF

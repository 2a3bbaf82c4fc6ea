"""Looking at a browser screenshot: where a colour is, and how long its runs are (Pillow)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


class Screenshot:
    """An RGB screenshot, read row by row."""

    def __init__(self, path: Path) -> None:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        self.width, self.height = rgb.size
        data = rgb.tobytes()
        stride = self.width * 3
        self.rows = [data[y * stride : (y + 1) * stride] for y in range(self.height)]

    @staticmethod
    def _starts(row: bytes, needle: bytes) -> list[int]:
        """Pixel-aligned offsets of ``needle`` in ``row``."""
        found, start = [], row.find(needle)
        while start >= 0:
            if start % 3 == 0:
                found.append(start)
            start = row.find(needle, start + 1)
        return found

    def count(self, rgb: bytes, below: int = 0) -> int:
        """Pixels of exactly this colour (in the rows from ``below`` down)."""
        return sum(len(self._starts(row, rgb)) for row in self.rows[below:])

    def longest_run(self, rgb: bytes, below: int = 0) -> int:
        """The longest horizontal run of this colour, in pixels (a bar, not stray pixels)."""
        best = 0
        for row in self.rows[below:]:
            run, last = 0, -6
            for start in self._starts(row, rgb):
                run = run + 1 if start == last + 3 else 1
                last = start
                best = max(best, run)
        return best

    def first_row_with_run(self, rgb: bytes, length: int) -> int:
        """The first row holding ``length`` pixels of this colour side by side."""
        needle = rgb * length
        return next(y for y, row in enumerate(self.rows) if self._starts(row, needle))

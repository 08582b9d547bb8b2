"""favicon.ico, drawn in code: browsers, feed readers and link previews ask for
/favicon.ico whatever a page's <link rel="icon"> says, and a 404 there fills every log.

The icon is the SVG favicon's rounded square in the accent colour with three white lines
of "text" (the SVG shows the initial, which would need a font here). It is a 32x32 PNG
inside an ICO container (Windows Vista and every browser since read PNG entries), built
with zlib and struct alone, so no imaging library is needed.
"""

from __future__ import annotations

import struct
import zlib

#: The archive's accent colour, as in favicon.svg.
ACCENT = (0xA3, 0x34, 0x1F)
SIZE = 32
CONTENT_TYPE = "image/vnd.microsoft.icon"


def favicon_ico(colour: tuple[int, int, int] = ACCENT, size: int = SIZE) -> bytes:
    """An ICO file holding one `size` x `size` PNG."""
    png = _png(_pixels(colour, size), size)
    header = struct.pack("<HHH", 0, 1, 1)  # reserved, type 1 = icon, one image
    entry = struct.pack(
        "<BBBBHHII",
        size % 256,  # width; 0 means 256
        size % 256,
        0,  # no palette
        0,
        1,  # colour planes
        32,  # bits per pixel
        len(png),
        len(header) + 16,  # the image follows the one 16-byte entry
    )
    return header + entry + png


def _pixels(colour: tuple[int, int, int], size: int) -> list[bytes]:
    """Rows of RGBA: a rounded square, with three white bars for lines of text."""
    radius = size * 3 // 16
    white = bytes((255, 255, 255, 255))
    fill = bytes((*colour, 255))
    clear = bytes(4)
    # three lines of "text", in 32ths of the side: (top, width), each 3 high from 6 in
    bars = [(size * top // 32, size * width // 32) for top, width in ((9, 20), (15, 20), (21, 13))]
    thick, left = size * 3 // 32, size * 6 // 32
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            if not _inside_rounded(x, y, size, radius):
                row += clear
            elif any(top <= y < top + thick and left <= x < left + width for top, width in bars):
                row += white
            else:
                row += fill
        rows.append(bytes(row))
    return rows


def _inside_rounded(x: int, y: int, size: int, radius: int) -> bool:
    cx = min(max(x, radius), size - 1 - radius)
    cy = min(max(y, radius), size - 1 - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def _png(rows: list[bytes], size: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 on every row
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )

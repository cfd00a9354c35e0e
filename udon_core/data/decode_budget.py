"""The memory budget of image decoding: what one decode may cost, and what all decodes of a process may hold
at once.

An image file says nothing about what decoding it costs: a 280 KB PNG of 12000 x 12000 16-bit pixels
(below PIL's decompression-bomb limit) decodes to 288 MB and, converted to RGB, holds about 1 GB. Before
the pixels are read, ``open_rgb`` computes the cost from the header (size and mode) and holds it here until
the RGB image it returns is released: an image whose cost exceeds the whole budget is refused with a
sentence; otherwise the decode waits until images decoded by other threads have been let go. So the image
check's threads stay within the budget together, and each DataLoader worker process (which has its own)
within it alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from udon_core.errors import ImageFileError

# why 1 GiB: an RGB image at PIL's own decompression-bomb error limit (2 x 89.5 Mpx) costs about this much
# to decode; a photo of 50 Mpx costs 400 MB.
DECODE_BUDGET_BYTES = 1 << 30

_TRANSPARENT = ("RGBA", "LA", "PA", "La", "RGBa")
SCRATCH_BYTES = 1 << 24


def decode_cost(mode: str, size: tuple[int, int], transparency: bool = False) -> int:
    """Bytes ``open_rgb`` holds at its peak for an image of ``mode`` and ``size`` (width, height).

    PIL keeps 1-band 8-bit modes in 1 byte a pixel, 16-bit grayscale in 2 and every other mode (RGB
    included) in 4. On top of the decoded image: the RGB result (4 bytes); for transparent images the RGBA
    composite on a white canvas (8 more); for 16/32-bit and float grayscale the 8-bit image (1 more); and
    a fixed 16 MiB of scratch (the row strips ``_to_8_bit`` scales). Measured peaks of the process match
    (tests/unit/test_images.py): 12000x12000 16-bit PNG 962 MiB, 8-bit 687 MiB, 9000x9000 RGB 618 MiB,
    RGBA 1236 MiB.
    """
    native = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    if mode in _TRANSPARENT or transparency:
        extra = 8
    elif mode.startswith("I") or mode == "F":
        extra = 1
    else:
        extra = 0
    return size[0] * size[1] * (native + extra + 4) + SCRATCH_BYTES


class DecodeBudget:
    """Bytes the decoded images of one process may hold at once; ``hold`` waits until a new one fits."""

    def __init__(self, total: int = DECODE_BUDGET_BYTES) -> None:
        self.total = total
        self.held = 0
        self.peak = 0  # the most held at once: what tests and benchmarks read
        self._by_thread: dict[int, int] = {}
        self._changed = threading.Condition()

    def hold(self, cost: int, path: Path, what: str = "") -> Callable[[], None]:
        """Take ``cost`` bytes for decoding ``path``; returns the function that gives them back (once).

        Raises:
            ImageFileError: ``cost`` exceeds the whole budget; the sentence names the size and the budget.
            RuntimeError: the calling thread would wait for memory that only it holds (a bug: code that keeps
                decoded images alive while it decodes more).
        """
        if cost > self.total:
            raise ImageFileError(path, f"refused: decoding it ({what}) needs about {cost / 2**20:,.0f} MiB, more "
                                       f"than the loader's budget of {self.total / 2**20:,.0f} MiB per image; "
                                       f"resize it (e.g. to at most 4000 px a side)")
        _large_blocks()
        me = threading.get_ident()
        with self._changed:
            if self.held + cost > self.total and self._by_thread.get(me):
                raise RuntimeError(f"decoding {path} would wait for decode memory its own thread holds "
                                   f"({self._by_thread[me]:,} bytes of decoded images still alive)")
            self._changed.wait_for(lambda: self.held + cost <= self.total)
            self.held += cost
            self._by_thread[me] = self._by_thread.get(me, 0) + cost
            self.peak = max(self.peak, self.held)
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            with self._changed:
                if not given_back:
                    given_back = True
                    self.held -= cost
                    self._by_thread[me] -= cost
                    self._changed.notify_all()

        return give_back


PIL_BLOCK_BYTES = 64 << 20
_blocks_set = False


def _large_blocks() -> None:
    """Have PIL allocate large images in blocks of 64 MiB (its default is 16 MiB), once per process.

    why: glibc serves allocations below 32 MiB from per-thread arenas and keeps what is freed there for
    the thread that freed it; a 16 MiB block freed by one image-check thread could not be reused by the
    next, so the process grew by the budget per thread. Blocks above 32 MiB are mapped and unmapped, and
    the budget holds for the process (``PILLOW_BLOCK_SIZE`` is Pillow's documented setting for this).
    """
    global _blocks_set
    if not _blocks_set:
        from PIL import Image

        if Image.core.get_block_size() < PIL_BLOCK_BYTES:
            Image.core.set_block_size(PIL_BLOCK_BYTES)
        _blocks_set = True


PROCESS_BUDGET = DecodeBudget()


def _fresh_after_fork() -> None:
    # why: a forked DataLoader worker must not inherit a lock held by a thread of its parent
    global PROCESS_BUDGET
    PROCESS_BUDGET = DecodeBudget(PROCESS_BUDGET.total)


os.register_at_fork(after_in_child=_fresh_after_fork)

"""The peak resident memory a piece of work adds to a process, as the kernel measured it (Linux).

Memory tests run the work in a fresh subprocess and call ``peak_above`` there: the high-water mark is
reset first, so an import's passing peak does not hide (or inflate) the work's own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _status(key: str) -> int:
    """A /proc/self/status memory figure, in bytes."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def peak_above(run: Callable[[], object]) -> int:
    """Bytes the process's resident set rose to, above where it stood, while ``run()`` ran."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark VmHWM (Linux >= 4.0)
    before = _status("VmRSS")
    run()
    return _status("VmHWM") - before

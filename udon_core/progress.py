"""Progress that reads well both in a terminal and in a log file.

In a terminal it is a tqdm bar. Elsewhere (CI logs, ``make run > log``) a redrawn bar becomes one line of
tens of thousands of characters, so it is a plain line instead: at most one per tenth of the work and per
``min_interval`` seconds, and always the last one (a quick loop prints just that).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm


class LineProgress:
    """The part of tqdm's interface the library uses, printing ``desc: n/total (p%) key=value`` lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 initial: int = 0, stream: TextIO | None = None, every: float = 0.1,
                 min_interval: float = 5.0) -> None:
        self.iterable, self.desc, self.n = iterable, desc, initial
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.stream = stream or sys.stderr
        self.step = max(1, int((self.total or 0) * every))
        self.postfix = ""
        self._next = initial + self.step
        self._printed_at = initial
        self._start = self._last = time.monotonic()
        self.min_interval = min_interval
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in () if self.iterable is None else self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next and time.monotonic() - self._last >= self.min_interval:
            self._next = self.n + self.step
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self._closed and self.n != self._printed_at:  # the last count, unless just printed
            self._print()
        self._closed = True

    def _print(self) -> None:
        self._printed_at, self._last = self.n, time.monotonic()
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        of = f"/{self.total}" if self.total else ""
        took = f" {time.monotonic() - self._start:.0f}s"
        tail = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of}{pct}{took}{tail}", file=self.stream, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str, enabled: bool = True,
             initial: int = 0) -> Any:
    """A tqdm bar in a terminal, periodic lines elsewhere, nothing when ``enabled`` is False."""
    if not enabled:
        return tqdm(iterable, total=total, desc=desc, initial=initial, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=False)
    return LineProgress(iterable, total=total, desc=desc, initial=initial)

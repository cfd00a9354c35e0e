"""Where a benchmark's images are: loose files under ``images/`` or records in packed shards.

The rest of the library reads images through this one seam, so datasets, evaluation's embedding, ``udon
embed`` and validation's image check never branch on the layout: ``image_source(root)`` chooses it from what
the folder holds (a packed index wins), ``source.reader(paths)`` gives a small picklable object that a
DataLoader worker reads records through. Every error names the record's original path (and its shard).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from udon_core.data.containment import DataRoot
from udon_core.data.shards import MISSING, OUTSIDE, PackedIndex, is_packed, read_record
from udon_core.data.transforms import open_rgb
from udon_core.data.uned import IMAGES_DIR, INFO_DIR
from udon_core.errors import ImageFileError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class RecordReader(ABC):
    """The images of a list of paths, by position; small and picklable, so DataLoader workers get a copy."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    @abstractmethod
    def exists(self, i: int) -> bool:
        """False when there is no image for record ``i`` (a missing file, a path the packed index lacks)."""

    @abstractmethod
    def open(self, i: int, draft: int | None = None) -> tuple[Image.Image, str]:
        """``open_rgb`` of record ``i``: ``(8-bit RGB image, the file's own mode)``; ImageFileError names it."""

    def original(self, i: int) -> tuple[int, int, str | None] | None:
        """``(width, height, mode)`` of the image as it was before packing, when that differs from what
        ``open`` decodes (a pre-resized record); None otherwise."""
        return None

    @abstractmethod
    def sha256(self, i: int) -> str | None:
        """Hex SHA-256 of record ``i``'s stored bytes (a byte-identical copy has the same); None if unreadable."""


class LooseReader(RecordReader):
    """Files ``images_dir/<path>``, read as they are."""

    def __init__(self, images_dir: Path, paths: Sequence[str]) -> None:
        super().__init__(paths)
        self.images_dir = Path(images_dir)

    def exists(self, i: int) -> bool:
        try:
            return (self.images_dir / self.paths[i]).is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL
            return False

    def open(self, i: int, draft: int | None = None) -> tuple[Image.Image, str]:
        return open_rgb(self.images_dir / self.paths[i], draft=draft)

    def sha256(self, i: int) -> str | None:
        try:
            with open(self.images_dir / self.paths[i], "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            return None


class PackedReader(RecordReader):
    """Records of packed shards: one ``pread`` per image, checked against the index's CRC-32.

    File descriptors are opened lazily per process and never pickled, so each DataLoader worker opens its
    own (``pread`` does not move a shared file offset, so a descriptor inherited through fork is safe too).
    """

    def __init__(self, root: Path, shards: list[str], paths: Sequence[str], where: dict[str, np.ndarray]) -> None:
        super().__init__(paths)
        self.root, self.shards = Path(root), shards
        self.shard_id, self.offset, self.length = where["shard_id"], where["offset"], where["length"]
        self.crc, self.found = where["crc32"], where["found"]
        # why numbers, not the index's strings: an array of Python strings is copied into every forked
        # DataLoader worker as it reads them (reference counts); at UnED size that is 4.1M objects per worker.
        self.missing, self.outside = where["stored"] == MISSING, where["stored"] == OUTSIDE
        self.size = np.stack([where["width"], where["height"]], axis=1)
        self.mode_code, self.modes = pd.factorize(pd.Series(where["mode"], dtype=object))  # None: code -1
        self._fds: dict[int, int] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}}

    def __del__(self) -> None:
        for fd in self.__dict__.get("_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def name(self, i: int) -> str:
        shard = self.shard_id[i]
        return self.paths[i] if shard < 0 else f"{self.paths[i]} in {self.root / self.shards[shard]}"

    def exists(self, i: int) -> bool:
        return bool(self.found[i]) and not self.missing[i]

    def read(self, i: int) -> bytes:
        """The stored bytes of record ``i``; ImageFileError naming the record and the shard."""
        if not self.found[i]:
            raise ImageFileError(self.paths[i], f"not in the packed index {self.root / 'packed/index.parquet'}")
        if self.missing[i] or self.outside[i]:
            why = "was missing" if self.missing[i] else "resolved outside images/"
            raise ImageFileError(self.paths[i], f"not packed: the file {why} when the benchmark was packed")
        shard = int(self.shard_id[i])
        path = self.root / self.shards[shard]
        try:
            fd = self._fds.get(shard)
            if fd is None:  # threads (the image check) may race here: the loser closes its descriptor
                opened = os.open(path, os.O_RDONLY)
                fd = self._fds.setdefault(shard, opened)
                if fd != opened:
                    os.close(opened)
            return read_record(fd, str(path), int(self.offset[i]), int(self.length[i]), int(self.crc[i]))
        except FileNotFoundError as err:
            raise ImageFileError(self.paths[i], f"its shard {path} is missing") from err
        except OSError as err:  # the reason names the shard: validation reports reasons beside the row
            raise ImageFileError(self.paths[i], str(err)) from err

    def open(self, i: int, draft: int | None = None) -> tuple[Image.Image, str]:
        return open_rgb(self.read(i), name=self.name(i), draft=draft)

    def original(self, i: int) -> tuple[int, int, str | None] | None:
        code = int(self.mode_code[i])
        return int(self.size[i, 0]), int(self.size[i, 1]), str(self.modes[code]) if code >= 0 else None

    def sha256(self, i: int) -> str | None:
        # The stored bytes: the original's with --keep-bytes; a re-encoding is deterministic, so byte-identical
        # sources still hash alike.
        try:
            return hashlib.sha256(self.read(i)).hexdigest()
        except ImageFileError:
            return None


class ImageSource(ABC):
    """A benchmark's images, whatever their layout."""

    @abstractmethod
    def reader(self, paths: Sequence[str]) -> RecordReader:
        """A reader over ``paths`` (relative to ``images/``), by position."""

    @abstractmethod
    def locate(self, paths: pd.Series, link_roots: Sequence[Path] = ()) -> pd.DataFrame:
        """Per row of ``paths``, where its image is, by the containment rule (``udon_core.data.containment``):
        ``inside_root`` (the path stays inside ``images/`` or a link root), ``file_exists``, ``file_size``,
        ``image_identity`` (the file however the path spells it) and ``reason`` (why it is not inside). Links,
        stats or the packed index only; nothing is opened."""

    @abstractmethod
    def list_paths(self) -> list[str]:
        """Every image path the source holds, sorted."""


class LooseImages(ImageSource):
    """Image files under a folder (a benchmark's ``images/``, or any folder of images)."""

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = Path(images_dir)

    def reader(self, paths: Sequence[str]) -> RecordReader:
        return LooseReader(self.images_dir, paths)

    def locate(self, paths: pd.Series, link_roots: Sequence[Path] = ()) -> pd.DataFrame:
        data_root = DataRoot(self.images_dir.parent, link_roots)  # the folder whose images/ this is
        found = {p: data_root.locate(p) for p in dict.fromkeys(paths)}
        return pd.DataFrame({"inside_root": [found[p].inside for p in paths],
                             "file_exists": [found[p].exists for p in paths],
                             "file_size": [found[p].size for p in paths],
                             "image_identity": [found[p].identity for p in paths],
                             "reason": [found[p].reason for p in paths]}, index=paths.index)

    def list_paths(self) -> list[str]:
        return sorted(str(p.relative_to(self.images_dir)) for p in self.images_dir.rglob("*")
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class PackedImages(ImageSource):
    """The records of a packed benchmark (``udon_core.data.shards``); the index is read once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.index = PackedIndex(self.root)

    def reader(self, paths: Sequence[str]) -> RecordReader:
        return PackedReader(self.root, self.index.shards, paths, self.index.lookup(list(paths)))

    def locate(self, paths: pd.Series, link_roots: Sequence[Path] = ()) -> pd.DataFrame:
        # Decided when packing, by the same rule: a path out of images/ was recorded as OUTSIDE (its target
        # never read), its identity as the rule saw it (null: the path itself).
        where = self.index.lookup(list(paths), ("stored", "source_bytes", "identity", "problem"))
        outside = where["stored"] == OUTSIDE
        exists = where["found"] & (where["stored"] != MISSING) & ~outside
        identity = [i if i is not None else p for i, p in zip(where["identity"], paths, strict=True)]
        return pd.DataFrame({"inside_root": ~outside, "file_exists": np.where(outside, None, exists),
                             "file_size": [int(n) if e else None for n, e in zip(where["source_bytes"], exists)],
                             "image_identity": identity,
                             "reason": np.where(outside, where["problem"], None)}, index=paths.index)

    def list_paths(self) -> list[str]:
        where = self.index.table
        stored = where.filter(np.isin(where["stored"].to_numpy(zero_copy_only=False), [MISSING, OUTSIDE],
                                      invert=True))
        return sorted(set(stored["path"].to_pylist()))


def image_source(root: Path) -> ImageSource:
    """The images of the benchmark at ``root``: packed when it holds a packed index, else ``root/images``."""
    root = Path(root)
    return PackedImages(root) if is_packed(root) else LooseImages(root / IMAGES_DIR)


def folder_source(folder: Path) -> ImageSource:
    """The images of any folder: a benchmark's (packed, or loose with ``images/`` and ``info_files/``), or
    the image files under it."""
    folder = Path(folder)
    if is_packed(folder) or ((folder / IMAGES_DIR).is_dir() and (folder / INFO_DIR).is_dir()):
        return image_source(folder)
    return LooseImages(folder)


def as_source(source: ImageSource | Path | str) -> ImageSource:
    """``source`` itself, or the source of the benchmark folder it names."""
    return source if isinstance(source, ImageSource) else image_source(Path(source))

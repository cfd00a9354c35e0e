"""The packed benchmark format: image bytes in POSIX tar shards, found through a Parquet index.

A packed benchmark is the loose one with ``images/`` replaced by ``packed/`` (``udon data pack`` writes it;
``benchmark.json`` and ``info_files/`` are copied byte for byte, so every report still names the original
path and row)::

    packed/pack.json                          how it was packed: format, keep-bytes or short side, counts
    packed/index.parquet                      one row per info-file record (INDEX_SCHEMA)
    packed/<domain>/<split>-000000.tar ...    the encoded images of that info file, in file order

Why tar in the WebDataset convention and a Parquet index (README, "Data at UnED scale"): a tar member's data
is contiguous, so a record is one ``pread(offset, length)`` (random access, hence exact resume) and one byte
range of an object in S3/GCS; any tool lists a shard (``tar -tf``) and WebDataset readers stream it
(``<key>.jpg`` + ``<key>.json`` per sample); few large files make DVC hash, push and pull per file cheaply;
both need nothing beyond the standard library and pyarrow, already a dependency. Arrow IPC would hold the
bytes in one column but cannot be read by WebDataset-style streaming tools; MDS (streaming/litdata) adds a
dependency tied to torch versions; TFRecord has no random access without an index of its own.

Deterministic: members are written in record order with fixed metadata (mtime 0, uid/gid 0, no user names,
mode 0644, USTAR), so the same images give the same bytes and the same DVC hash.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zlib
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from udon_core.errors import UdonUserError

PACKED_DIR = "packed"
INDEX_FILE = f"{PACKED_DIR}/index.parquet"
META_FILE = f"{PACKED_DIR}/pack.json"
PACK_FORMAT = "udon-packed/1"
_BLOCK = tarfile.BLOCKSIZE

# How a record's image is held: its original bytes, re-encoded at a smaller size, or not at all (the file
# was missing, or resolved outside images/, when the benchmark was packed).
STORED, RESIZED, MISSING, OUTSIDE = "original", "resized", "missing", "outside"

INDEX_SCHEMA = pa.schema([
    pa.field("domain", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("row", pa.int64(), nullable=False),           # the record's row in its info file
    pa.field("path", pa.string(), nullable=False),         # the source path, relative to images/
    pa.field("identity", pa.string()),                     # the file it names (containment rule); null: path
    pa.field("labels", pa.list_(pa.int64()), nullable=False),
    pa.field("stored", pa.string(), nullable=False),       # STORED | RESIZED | MISSING | OUTSIDE
    pa.field("shard", pa.string()),                        # relative to the benchmark root; null if not stored
    pa.field("offset", pa.int64(), nullable=False),        # of the image bytes in the shard (-1: not stored)
    pa.field("length", pa.int64(), nullable=False),
    pa.field("crc32", pa.int64(), nullable=False),         # zlib.crc32 of the stored bytes
    pa.field("width", pa.int32(), nullable=False),         # the source image's size (0: not readable)
    pa.field("height", pa.int32(), nullable=False),
    pa.field("mode", pa.string()),                         # the source image's PIL mode (null: not readable)
    pa.field("source_bytes", pa.int64(), nullable=False),  # the source file's size
    pa.field("problem", pa.string()),                      # what packing found wrong with the source image
])
_LOCATION = ("path", "identity", "stored", "shard", "offset", "length", "crc32", "width", "height", "mode",
             "source_bytes", "problem")
_FILLS = {"stored": MISSING, "shard_id": -1, "offset": -1, "length": 0, "crc32": 0, "width": 0, "height": 0,
          "mode": None, "source_bytes": 0, "identity": None, "problem": None}  # what a path the index lacks gets
_READER = ("stored", "shard_id", "offset", "length", "crc32", "width", "height", "mode")  # a RecordReader's


class PackedIndexError(UdonUserError, ValueError):
    """A packed benchmark's index or metadata that is missing, damaged or not ours; names the file."""


def is_packed(root: Path) -> bool:
    """True when ``root`` holds a packed benchmark (its index); the reading layer then reads shards."""
    return (Path(root) / INDEX_FILE).is_file()


def shard_name(domain: str, split: str, number: int) -> str:
    """A shard's path relative to the benchmark root."""
    return f"{PACKED_DIR}/{domain}/{split}-{number:06d}.tar"


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    return info


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


class ShardWriter:
    """Writes one info file's images into ``<split>-NNNNNN.tar`` shards of at most ``max_bytes`` each.

    Each sample is ``<key>.<ext>`` (the image bytes) and ``<key>.json`` (its path, domain, split, row and
    labels), the WebDataset convention; ``add`` returns where the image bytes start.
    """

    def __init__(self, root: Path, domain: str, split: str, max_bytes: int) -> None:
        self.root, self.domain, self.split, self.max_bytes = Path(root), domain, split, max_bytes
        self.number, self.tar, self.current = -1, None, ""

    def _roll(self, size: int) -> None:
        if self.tar is not None and self.tar.offset + size <= self.max_bytes:
            return
        self.close()
        self.number += 1
        self.current = shard_name(self.domain, self.split, self.number)
        (self.root / self.current).parent.mkdir(parents=True, exist_ok=True)
        self.tar = tarfile.open(self.root / self.current, "w", format=tarfile.USTAR_FORMAT)

    def add(self, key: str, ext: str, data: bytes, meta: dict) -> tuple[str, int]:
        """Append one sample; ``(shard, offset of the image bytes in it)``."""
        meta_bytes = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode()
        self._roll(2 * _BLOCK + _padded(len(data)) + _padded(len(meta_bytes)))
        assert self.tar is not None
        self.tar.addfile(_tar_info(f"{key}.{ext}", len(data)), io.BytesIO(data))
        offset = self.tar.offset - _padded(len(data))  # the header, then the data, padded to a block
        self.tar.addfile(_tar_info(f"{key}.json", len(meta_bytes)), io.BytesIO(meta_bytes))
        return self.current, offset

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def write_index(root: Path, rows: dict[str, list]) -> Path:
    """Write the index (columns of INDEX_SCHEMA) in the order given; deterministic bytes."""
    path = Path(root) / INDEX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pydict(rows, schema=INDEX_SCHEMA)
    # why these options: no creation timestamp or writer-dependent statistics vary between runs; row groups of
    # 1M records keep a 4.1M-record index readable in parts.
    pq.write_table(table, path, compression="zstd", row_group_size=1 << 20, write_statistics=False)
    return path


def read_pack_meta(root: Path) -> dict:
    """``packed/pack.json``: the format, how images were stored, the counts; a PackedIndexError names a bad file."""
    path = Path(root) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PackedIndexError(f"{path}: cannot read the packed benchmark's description ({err}); "
                               "pack the benchmark again (udon data pack) or restore it (dvc checkout)") from err
    if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT:
        raise PackedIndexError(f"{path}: not a {PACK_FORMAT} packed benchmark (format {meta.get('format')!r})"
                               if isinstance(meta, dict) else f"{path}: not a packed benchmark description")
    return meta


def packing_of(root: Path) -> str:
    """How the benchmark at ``root`` holds its images, named as ``udon data pack``'s flags: 'loose' (image
    files), 'keep-bytes' or 'short-side N' (a PackedIndexError names a damaged description)."""
    if not is_packed(root):
        return "loose"
    side = read_pack_meta(root).get("short_side")
    return "keep-bytes" if side is None else f"short-side {side}"


class PackedIndex:
    """The location of every packed image, looked up by source path (loaded once, columns kept in Arrow)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        path = self.root / INDEX_FILE
        try:
            table = pq.read_table(path, columns=list(_LOCATION))
        except (OSError, ValueError, pa.ArrowException) as err:
            raise PackedIndexError(f"{path}: damaged or unreadable packed index ({type(err).__name__}: {err}); "
                                   "pack the benchmark again (udon data pack) or restore it (dvc checkout)") from err
        wrong = [f for f in _LOCATION if table.schema.field(f).type != INDEX_SCHEMA.field(f).type]
        if wrong:
            raise PackedIndexError(f"{path}: not a {PACK_FORMAT} index (column(s) {', '.join(wrong)} of another type)")
        self.table = table

    @cached_property
    def _shard_table(self) -> pa.DictionaryArray:
        return self.table["shard"].combine_chunks().dictionary_encode()  # indices: null where not stored

    @property
    def shards(self) -> list[str]:
        """Every shard's path relative to the root; ``lookup``'s ``shard_id`` indexes it."""
        return self._shard_table.dictionary.to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows

    def lookup(self, paths: list[str], columns: tuple[str, ...] = _READER) -> dict[str, np.ndarray]:
        """Per path, in order, as arrays: ``found`` and the ``columns`` asked for (index columns, and
        ``shard_id``: into ``shards``, -1 for none). One vectorised lookup in Arrow, no Python dict of millions
        of paths."""
        at = pc.index_in(pa.array(paths, type=pa.string()), value_set=self.table["path"])
        found = pc.is_valid(at)
        take = pc.fill_null(at, 0)
        out = {"found": found.to_numpy(zero_copy_only=False)}
        for name in columns:
            values = (pc.fill_null(self._shard_table.indices.cast(pa.int32()), -1) if name == "shard_id" else
                      self.table[name])
            got = pc.take(values, take) if len(self.table) else pa.nulls(len(paths), values.type)
            out[name] = pc.if_else(found, got, pa.scalar(_FILLS[name], values.type)).to_numpy(zero_copy_only=False)
        return out


def read_record(fd: int, shard: str, offset: int, length: int, crc: int) -> bytes:
    """The ``length`` bytes at ``offset`` of an open shard, checked against the index's checksum.

    Raises OSError with a reason naming the shard (the caller adds the record) on a short read or a mismatch.
    """
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"damaged shard {shard}: the record's {length} bytes at offset {offset} run past the end "
                      f"of the file ({offset + len(data)} bytes)")
    if zlib.crc32(data) != crc:
        raise OSError(f"damaged shard {shard}: the record's {length} bytes at offset {offset} do not match the "
                      "index checksum")
    return data

"""``udon data pack``: a loose benchmark (``images/`` + ``info_files/``) becomes a packed one (``shards``).

Every info file's images go, in file order, into that domain and split's tar shards; an image listed by
several records is stored once. ``benchmark.json``, ``info_files/`` and the other top-level files are copied
byte for byte, so readers, reports and errors still name the original path and row.

- keep bytes (default): the original file bytes, so decoding is bit-identical to the loose benchmark;
- ``short_side=N``: images whose shorter side exceeds N are decoded once (as training reads them: RGB,
  transparency on white), resized to a shorter side of N with Lanczos and re-encoded (JPEG sources as JPEG at
  ``quality``, others as PNG); smaller images keep their bytes (never upscaled).

Nothing is dropped silently: an image that cannot be read is stored as it is (validation then names it by
path and row, as for the loose benchmark), a missing file or a link out of ``images/`` is recorded as such
(and the target of such a link is never read); ``PackResult.problems`` lists each by info file and row.
Deterministic: the same input gives the same bytes (and DVC hash) whatever the number of workers.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import PIL
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from udon_core.data.benchmark import resolve_benchmark_spec
from udon_core.data.containment import DataRoot, Outside
from udon_core.data.shards import (
    INDEX_SCHEMA,
    META_FILE,
    MISSING,
    OUTSIDE,
    PACK_FORMAT,
    PACKED_DIR,
    RESIZED,
    STORED,
    ShardWriter,
    is_packed,
    write_index,
)
from udon_core.data.transforms import open_rgb
from udon_core.data.uned import IMAGES_DIR, INFO_DIR, ImageRecord, check_info_file
from udon_core.device import usable_cores
from udon_core.errors import ImageFileError, InvalidValueError, MissingFileError, OutputExistsError, UdonUserError
from udon_core.progress import progress as show_progress

_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


class PackConfig(BaseModel):
    """How a benchmark is packed; all but ``workers`` decide the bytes (and so the DVC hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    short_side: int | None = Field(
        default=None, ge=8, description="re-encode images with a larger shorter side at this size; None keeps "
        "the original bytes. Choose it >= the train resize (256 for UDON's 224 px crops)")
    quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of re-encoded JPEG sources")
    shard_bytes: int = Field(default=256 * 2**20, ge=2**16, description="largest shard file, in bytes")
    workers: int = Field(default_factory=usable_cores, ge=1, description="processes "
                         "that read and encode images (1: in this process); default: the cores this process may use")


@dataclass(frozen=True)
class PackProblem:
    """A record whose image is not packed as a readable image: where it is listed and what is wrong."""

    info_file: str
    row: int
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.info_file} row {self.row}: {self.path}: {self.problem}"


@dataclass
class PackResult:
    root: Path
    records: int
    images: int
    resized: int
    source_bytes: int
    packed_bytes: int
    shards: int
    problems: list[PackProblem] = field(default_factory=list)


@dataclass(frozen=True)
class _Packed:
    """One image as the worker prepared it."""

    stored: str
    identity: str | None = None
    data: bytes = b""
    ext: str = "bin"
    width: int = 0
    height: int = 0
    mode: str | None = None
    source_bytes: int = 0
    problem: str | None = None


def _resized(image: Image.Image, short_side: int, fmt: str | None, quality: int) -> tuple[bytes, str]:
    scale = short_side / min(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # Pillow's thumbnail recipe: decoded at >= 2x the target (draft), then reduced by an integer box filter
    # to >= 2x and resampled with Lanczos (reducing_gap 2): as sharp as a full Lanczos, several times faster.
    small = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    buf = io.BytesIO()
    if fmt == "JPEG":
        small.save(buf, format="JPEG", quality=quality)
        return buf.getvalue(), "jpg"
    small.save(buf, format="PNG", compress_level=6)
    return buf.getvalue(), "png"


def prepare_image(root: DataRoot, path: str, short_side: int | None, quality: int) -> _Packed:
    """Read, check and (for ``short_side``) re-encode one image; a bad image keeps its bytes and its problem.

    The containment rule (``udon_core.data.containment``) decides first: a path that leaves ``images/`` (and
    the link roots) is never opened, and the index keeps the file it names (its identity)."""
    located = root.locate(path)
    identity = None if located.identity == path else located.identity
    if not located.inside:
        return _Packed(OUTSIDE, identity=identity, problem=f"not read, not packed: {located.reason}")
    if not located.exists:
        return _Packed(MISSING, identity=identity, problem="file not found: not packed")
    full = root.images / path
    data = full.read_bytes()
    try:
        # the whole file is decoded, so a truncated image is found now (at 1/8 scale when only checking)
        image, mode = open_rgb(data, name=str(full), draft=1 if short_side is None else 2 * short_side)
    except ImageFileError as err:
        return _Packed(STORED, identity, data, Path(path).suffix.lower().lstrip(".") or "bin",
                       source_bytes=len(data), problem=f"{err.reason} (stored as it is)")
    with Image.open(io.BytesIO(data)) as im:  # decoded above, so the header reads
        fmt, (width, height) = im.format, im.size
    packed = _Packed(STORED, identity, data, _EXT.get(fmt or "", "bin"), width, height, mode, len(data))
    if short_side is None or min(width, height) <= short_side:
        return packed
    encoded, ext = _resized(image, short_side, fmt, quality)
    return _Packed(RESIZED, identity, encoded, ext, width, height, mode, len(data))


def _prepare_chunk(root: DataRoot, paths: list[str], short_side: int | None, quality: int) -> list[_Packed]:
    return [prepare_image(root, path, short_side, quality) for path in paths]


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _info_files(src: Path, link_roots: Sequence[Path]) -> list[tuple[str, str]]:
    """(domain, stem) of every info file: the benchmark's own first, in its order, then any others, sorted."""
    try:
        spec = resolve_benchmark_spec("auto", src, link_roots)
        named = [(d.name, stem) for d in spec.domains for stem in d.info_files]
    except UdonUserError:  # the order only lays out the shards; reading the packed copy reports the description
        named = []
    present = sorted((p.parent.name, p.stem) for p in (src / INFO_DIR).glob("*/*.json"))
    return list(dict.fromkeys([*[n for n in named if n in present], *present]))


def _readable(root: DataRoot, path: Path, base: Path) -> Path:
    """Where ``path`` leads, when the containment rule lets it be read (inside ``base`` or a link root);
    otherwise an error naming it, as reading the benchmark refuses it: a file from outside the folder
    would be sealed into the packed copy's data version."""
    try:
        return root.contain(path, base)
    except Outside as err:
        raise InvalidValueError(f"{err.path}: not packed: it {err.reason}") from err


def _copy_description(src: Path, out: Path, root: DataRoot) -> None:
    """benchmark.json, info_files/ and any other top-level file, byte for byte (each held to the
    containment rule)."""
    for item in sorted(src.iterdir()):
        if item.is_file() and not item.name.startswith("."):
            shutil.copyfile(_readable(root, item, root.root), out / item.name)
    for info in sorted((src / INFO_DIR).rglob("*")):
        if info.is_file():
            target = out / info.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_readable(root, info, root.info), target)


@dataclass
class _Plan:
    """Every record to index, in order, with the position of its image among the unique images to pack (in
    the order they are stored: an image listed by several records is packed at its first listing)."""

    records: list[tuple[str, str, int, ImageRecord, int]] = field(default_factory=list)
    images: list[tuple[str, str, int, ImageRecord]] = field(default_factory=list)


def _plan(src: Path, root: DataRoot) -> _Plan:
    plan, position = _Plan(), {}
    for domain, stem in _info_files(src, root.link_roots):
        path = src / INFO_DIR / domain / f"{stem}.json"
        rows, _ = check_info_file(path, _readable(root, path, root.info))  # bad rows: validation names them
        for row, rec in rows:
            if rec.path not in position:
                position[rec.path] = len(plan.images)
                plan.images.append((domain, stem, row, rec))
            plan.records.append((domain, stem, row, rec, position[rec.path]))
    return plan


def _prepared(root: DataRoot, plan: _Plan, config: PackConfig) -> Iterator[_Packed]:
    """The prepared images in plan order; at most a few chunks per worker in flight, so memory stays bounded
    whatever the benchmark's size, and a worker that dies raises (BrokenProcessPool) instead of hanging.
    ``root`` (the folder and link roots, resolved once) travels with each chunk, not per image."""
    paths = (rec.path for _, _, _, rec in plan.images)
    if config.workers == 1:
        for path in paths:
            yield prepare_image(root, path, config.short_side, config.quality)
        return
    # the platform's default start method, as torch's DataLoader workers use it (fork on Linux)
    with ProcessPoolExecutor(config.workers) as pool:
        pending: deque = deque()
        for chunk in _chunks(paths, 16):
            pending.append(pool.submit(_prepare_chunk, root, chunk, config.short_side, config.quality))
            if len(pending) >= 4 * config.workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


_IMAGE_COLUMNS = ("identity", "stored", "shard", "offset", "length", "crc32", "width", "height", "mode",
                  "source_bytes", "problem")


def _write_shards(tmp: Path, root: DataRoot, plan: _Plan, config: PackConfig,
                  progress: bool) -> tuple[dict[str, list], list[PackProblem]]:
    """Pack every unique image; the index columns per unique image (plan order) and the problems found.

    Columns, not a dict per image: UnED's 4.1M images would cost gigabytes of dicts."""
    images: dict[str, list] = {name: [] for name in _IMAGE_COLUMNS}
    problems: list[PackProblem] = []
    writer: ShardWriter | None = None
    bar = show_progress(total=len(plan.images), desc="pack", enabled=progress)
    with bar:
        for (domain, stem, row, rec), got in zip(plan.images, _prepared(root, plan, config), strict=True):
            shard, offset = None, -1
            if got.stored in (STORED, RESIZED):
                if writer is None or (writer.domain, writer.split) != (domain, stem):  # an info file's images
                    if writer is not None:                                         # are contiguous in the plan
                        writer.close()
                    writer = ShardWriter(tmp, domain, stem, config.shard_bytes)
                meta = {"path": rec.path, "domain": domain, "split": stem, "row": row,
                        "class_id": rec.labels[0] if len(rec.labels) == 1 else list(rec.labels)}
                shard, offset = writer.add(f"{row:09d}", got.ext, got.data, meta)
            if got.problem:
                problems.append(PackProblem(f"{domain}/{stem}.json", row, rec.path, got.problem))
            for name, value in zip(_IMAGE_COLUMNS, (got.identity, got.stored, shard, offset, len(got.data),
                                                    zlib.crc32(got.data), got.width, got.height, got.mode,
                                                    got.source_bytes, got.problem), strict=True):
                images[name].append(value)
            bar.update(1)
    if writer is not None:
        writer.close()
    return images, problems


def _index_columns(plan: _Plan, images: dict[str, list]) -> dict[str, list]:
    cols: dict[str, list] = {name: [] for name in INDEX_SCHEMA.names}
    for domain, stem, row, rec, at in plan.records:
        for name, value in (("domain", domain), ("split", stem), ("row", row), ("path", rec.path),
                            ("labels", list(rec.labels))):
            cols[name].append(value)
        for name in _IMAGE_COLUMNS:
            cols[name].append(images[name][at])
    return cols


def _check_paths(src: Path, out: Path, overwrite: bool) -> None:
    if not (src / IMAGES_DIR).is_dir() or not (src / INFO_DIR).is_dir():
        if is_packed(src):
            raise InvalidValueError(f"{src} is packed already")
        raise MissingFileError(f"{src}: not a benchmark folder (needs {IMAGES_DIR}/ and {INFO_DIR}/)")
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
        raise InvalidValueError(f"{out}: the packed benchmark must be written outside {src}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite to replace it")


def pack_benchmark(src: Path, out: Path, config: PackConfig = PackConfig(), link_roots: Sequence[Path] = (),
                   progress: bool = True, overwrite: bool = False) -> PackResult:
    """Pack the loose benchmark ``src`` into ``out`` (module docstring). ``link_roots``: where image links
    may point besides ``images/`` (the DVC cache of a symlinked workspace). Written under a temporary name
    and renamed, so ``out`` is either the whole packed benchmark or absent."""
    src, out = Path(src), Path(out)
    _check_paths(src, out, overwrite)
    root = DataRoot(src, link_roots)  # resolved once: every image and info file is held to it
    plan = _plan(src, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.packing-"))
    try:
        _copy_description(src, tmp, root)
        images, problems = _write_shards(tmp, root, plan, config, progress)
        write_index(tmp, _index_columns(plan, images))
        shards = sorted(str(p.relative_to(tmp)) for p in (tmp / PACKED_DIR).rglob("*.tar"))
        result = PackResult(out, len(plan.records), len(plan.images), images["stored"].count(RESIZED),
                            sum(images["source_bytes"]), sum((tmp / s).stat().st_size for s in shards),
                            len(shards), problems)
        _write_meta(tmp, config, result)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _write_meta(root: Path, config: PackConfig, result: PackResult) -> None:
    meta = {"format": PACK_FORMAT, "stored": "original bytes" if config.short_side is None else
            f"shorter side {config.short_side} px", **config.model_dump(exclude={"workers"}),
            "pillow": PIL.__version__, "records": result.records, "images": result.images,
            "resized": result.resized, "shards": result.shards, "source_bytes": result.source_bytes,
            "packed_bytes": result.packed_bytes, "problems": [str(p) for p in result.problems]}
    (root / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")

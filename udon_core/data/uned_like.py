"""A UnED-shaped benchmark of generated photographs, any size: for benchmarks and tests at UnED scale.

UnED's 8 domains with their names, query/index protocols and train class counts (``num_train_classes``),
JPEGs of UnED's sizes (sides of 500-1280 px, ~75 KB at the default quality; UnED averages 83 KB) and
photo-like content: a soft lit background, a few overlapping objects whose layout and colours make the class,
camera jitter per image, texture at several scales and sensor grain, so that JPEG sizes, decode times and
resampling behave like real photos, and classes can be retrieved. Deterministic: the same config writes the
same bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pydantic import BaseModel, ConfigDict, Field

from udon_core.data.benchmark import UNED, BenchmarkSpec, save_benchmark_spec
from udon_core.data.uned import IMAGES_DIR, ImageRecord, info_file_path, write_info_file
from udon_core.device import usable_cores
from udon_core.errors import OutputExistsError
from udon_core.progress import progress as show_progress

# UnED's images per domain (train + every eval file, research/udon.md section 5.1): the share of each domain.
UNED_IMAGES = {"food2k": 531_651, "cars": 16_185, "sop": 120_053, "inshop": 52_709, "inat": 461_939,
               "met": 398_253, "gldv2": 2_343_356, "rp2k": 216_840}


class UnedLikeConfig(BaseModel):
    """How many generated images, of what size; the defaults give UnED-like JPEGs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: int = Field(default=2_000, ge=80, description="images in all, shared between domains as in UnED "
                        "(at least 10 per domain)")
    min_side: int = Field(default=500, ge=16, description="smallest image side, px")
    max_side: int = Field(default=1280, ge=16, description="largest image side, px")
    quality: int = Field(default=85, ge=1, le=100, description="JPEG quality (85: ~75 KB per image; UnED: 83)")
    seed: int = 0
    workers: int = Field(default_factory=usable_cores, ge=1, description="processes that draw and encode "
                         "images; default: the cores this process may use")


@dataclass(frozen=True)
class _Item:
    path: str
    label: int
    seed: tuple[int, ...]


def _domain_sizes(total: int) -> dict[str, int]:
    share = np.array(list(UNED_IMAGES.values()), dtype=float)
    sizes = np.maximum(10, np.floor(total * share / share.sum())).astype(int)
    sizes[int(np.argmax(sizes))] -= max(0, int(sizes.sum()) - total)  # the largest domain absorbs the rounding
    return dict(zip(UNED_IMAGES, sizes.tolist(), strict=True))


def _pairs(prefix: str, n: int, first_class: int, spread: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """``n`` (>= 2) images in classes of about 3 (never fewer than 2), their ids drawn from
    ``first_class .. first_class + spread - 1``."""
    k = max(1, min(n // 3, spread, n // 2))
    sizes = np.full(k, n // k) + (np.arange(k) < n % k)
    ids = first_class + np.sort(rng.choice(spread, size=k, replace=False))
    return [(f"{prefix}/{i:07d}.jpg", int(c)) for i, c in enumerate(np.repeat(ids, sizes))]


def _domain_files(name: str, n: int, rng: np.random.Generator) -> dict[str, list[tuple[str, int]]]:
    """The info files of one domain: 70% train, the rest split between the eval files its protocol needs."""
    d = UNED.domain(name)
    classes = d.num_train_classes or 2
    n_eval = max(4, (3 * n) // 10)
    n_train = n - n_eval
    files = {"train": _pairs(f"{name}/train", n_train, 0, classes, rng)}
    # eval classes start after the train classes (disjoint), except Met, whose test queries its train set
    evals = {s for e in d.evals.values() for s in (e.query, e.index)} - {"train"}
    for k, stem in enumerate(sorted(evals)):
        first = classes + k * n if d.classes_disjoint else 0
        files[stem] = _pairs(f"{name}/{stem}", max(2, n_eval // len(evals)), first, n if d.classes_disjoint else
                             classes, rng)
    for ev in d.evals.values():  # a separate index holds every query class (UnED's InShop, GLDv2, Met)
        if ev.query != ev.index:
            index_classes = {c for _, c in files[ev.index]}
            files[ev.query] = [(p, c if c in index_classes else sorted(index_classes)[i % len(index_classes)])
                               for i, (p, c) in enumerate(files[ev.query])]
    return files


def _palette(label: int, domain: int) -> np.random.Generator:
    return np.random.default_rng([domain, label, 7])


def draw_photo(label: int, domain: int, seed: tuple[int, ...], size: tuple[int, int]) -> Image.Image:
    """One photo-like RGB image of class ``label``: the class fixes the scene, ``seed`` the shot.

    Drawn at a quarter of the size (light, objects, texture at three scales, as natural images have detail
    at every scale), then enlarged, then given full-resolution grain."""
    cls, shot = _palette(label, domain), np.random.default_rng(seed)
    w, h = size
    sw, sh = max(8, w // 4), max(8, h // 4)
    light = cls.integers(40, 216, size=(3, 4, 3)) + shot.integers(-25, 26, size=(3, 4, 3))
    image = Image.fromarray(np.clip(light, 0, 255).astype(np.uint8)).resize((sw, sh), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(cls.integers(3, 7))):
        cx, cy, r = cls.uniform(0.15, 0.85), cls.uniform(0.15, 0.85), cls.uniform(0.08, 0.3)
        cx, cy = cx + shot.normal(0, 0.04), cy + shot.normal(0, 0.04)
        r *= shot.uniform(0.85, 1.15)
        colour = tuple(int(v) for v in np.clip(cls.integers(0, 256, 3) + shot.integers(-20, 21, 3), 0, 255))
        box = [(cx - r) * sw, (cy - r * sw / sh) * sh, (cx + r) * sw, (cy + r * sw / sh) * sh]
        (draw.ellipse if cls.random() < 0.5 else draw.rectangle)(box, fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + _texture(sw, sh, shot)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    return _grain(image.resize((w, h), Image.Resampling.BICUBIC), shot)


def _texture(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """``[h, w, 1]`` brightness texture: smooth random fields with cells of 2, 6 and 24 px, summed."""
    out = np.zeros((h, w), dtype=np.float32)
    for cell, amp in ((2, 10.0), (6, 9.0), (24, 14.0)):
        field = rng.normal(0, amp, (h // cell + 2, w // cell + 2)).astype(np.float32)
        out += np.asarray(Image.fromarray(field, mode="F").resize((w, h), Image.Resampling.BICUBIC))
    return out[..., None]


_GRAIN: np.ndarray | None = None


def _grain(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sensor-like grain: a window of a fixed noise texture (fast; the texture is made once per process)."""
    global _GRAIN
    w, h = image.size
    if _GRAIN is None or _GRAIN.shape[0] < max(w, h):
        side = max(1400, w, h)
        _GRAIN = np.random.default_rng(0).normal(0, 3.0, size=(side, side, 3)).astype(np.int16)
    y, x = int(rng.integers(0, _GRAIN.shape[0] - h + 1)), int(rng.integers(0, _GRAIN.shape[1] - w + 1))
    pixels = np.asarray(image, dtype=np.int16) + _GRAIN[y:y + h, x:x + w]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _render(job: tuple[str, str, int, int, tuple[int, ...], int, int, int]) -> None:
    root, path, label, domain, seed, lo, hi, quality = job
    rng = np.random.default_rng(seed)
    long_side = int(rng.integers(max(lo, min(hi, 640)), hi + 1))
    short = int(np.clip(round(long_side / rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9])), lo, long_side))
    size = (long_side, short) if rng.random() < 0.7 else (short, long_side)
    image = draw_photo(label, domain, seed, size)
    out = Path(root) / IMAGES_DIR / path
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    out.write_bytes(buf.getvalue())


def _render_all(jobs: list[tuple], workers: int, progress: bool) -> None:
    bar = show_progress(total=len(jobs), desc="generate", enabled=progress)
    with bar:
        if workers == 1:
            for job in jobs:
                _render(job)
                bar.update(1)
            return
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(_render, jobs, chunksize=8):
                bar.update(1)


def _jobs(root: Path, config: UnedLikeConfig, files: dict[str, dict[str, list]]) -> Iterator[tuple]:
    for d, (domain, stems) in enumerate(files.items()):
        for s, (stem, items) in enumerate(sorted(stems.items())):
            for i, (path, label) in enumerate(items):
                yield (str(root), path, label, d, (config.seed, d, s, i), config.min_side, config.max_side,
                       config.quality)


def write_uned_like_benchmark(out: Path, config: UnedLikeConfig = UnedLikeConfig(), progress: bool = True) -> Path:
    """Write a loose UnED-shaped benchmark into ``out`` (``images/``, ``info_files/``, ``benchmark.json``)."""
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise OutputExistsError(f"{root} exists and is not empty")
    rng = np.random.default_rng(config.seed)
    files = {name: _domain_files(name, n, rng) for name, n in _domain_sizes(config.images).items()}
    _render_all(list(_jobs(root, config, files)), config.workers, progress)
    for domain, stems in files.items():
        for stem, items in stems.items():
            write_info_file(info_file_path(root, domain, stem), [ImageRecord(p, (c,)) for p, c in items])
    spec: BenchmarkSpec = UNED.model_copy(update={"name": "uned-like", "description": "generated photos in UnED's "
                                                  "shape (udon_core.data.uned_like): " + json.dumps(
                                                      config.model_dump(exclude={"workers"}), sort_keys=True)})
    save_benchmark_spec(spec, root)
    return root

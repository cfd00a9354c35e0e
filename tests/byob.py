"""A user's own two-domain benchmark in the UnED format, and a twin with one of each defect, written from
scratch (real image files of several kinds), for the "bring your own benchmark" tests and README example.

``shop``: class-disjoint, queries (some multi-label) against a separate ``index`` split that also holds
distractors from training classes (as UnED's GLDv2/Met indexes do). ``art``: classes shared between
train and test, queries searched against their own split (self-excluded), with an exact duplicate image
under another name, paths with spaces and non-ASCII characters, grayscale PNG beside RGB JPEG, a 16-bit
PNG and a CMYK JPEG (a warning: converted without a colour profile).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

DESCRIPTION = {
    "name": "my-benchmark",
    "description": "two domains of our own",
    "domains": [
        {"name": "shop", "evals": {"val": {"query": "val", "index": "val"},
                                   "test": {"query": "query", "index": "index"}}},
        {"name": "art", "num_train_classes": 3, "classes_disjoint": False,
         "evals": {"val": {"query": "val", "index": "val"}, "test": {"query": "test", "index": "test"}}},
    ],
}


def _pixels(label: int, i: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(1000 * label + i)
    base = np.array([(label * 67) % 256, (label * 131 + 40) % 256, (label * 29 + 90) % 256], dtype=np.float64)
    return np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)


def _save(root: Path, rel: str, label: int, i: int, kind: str = "png") -> str:
    path = root / "images" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_pixels(label, i))
    if kind == "jpg":
        rgb.save(path, "JPEG", quality=92)
    elif kind == "gray":
        rgb.convert("L").save(path)
    elif kind == "gray16":
        Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).save(path)
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, "JPEG", quality=92)
    else:
        rgb.save(path)
    return rel


def _info(root: Path, domain: str, split: str, records: list) -> None:
    path = root / "info_files" / domain / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"path": p, "class_id": c} for p, c in records], ensure_ascii=False, indent=1))


def write_benchmark(root: Path) -> Path:
    """The clean benchmark in ``root`` (images/, info_files/, benchmark.json)."""
    root.mkdir(parents=True, exist_ok=True)
    kinds = ["png", "jpg", "gray", "png"]
    shop_train = [(_save(root, f"shop/train/{c}_{i}.{'jpg' if kinds[i] == 'jpg' else 'png'}", c, i, kinds[i]), c)
                  for c in range(4) for i in range(4)]
    shop_val = [(_save(root, f"shop/val/{c}_{i}.png", c, 50 + i), c) for c in (20, 21, 22) for i in range(2)]
    query = [(_save(root, f"shop/query/q{c}_{i}.png", c, 100 + i), c) for c in (10, 11) for i in range(2)]
    query.append((_save(root, "shop/query/multi.png", 12, 100), [11, 12]))
    index = [(_save(root, f"shop/index/i{c}_{i}.png", c, 200 + i), c) for c in (10, 11, 12) for i in range(3)]
    index += [(_save(root, f"shop/index/distractor {c}.png", c, 300), c) for c in (0, 1)]  # train classes
    _info(root, "shop", "train", shop_train)
    _info(root, "shop", "val", shop_val)
    _info(root, "shop", "query", query)
    _info(root, "shop", "index", index)

    art_train = [(_save(root, f"art/train/klasse {c}/bild {i}.png", c, 400 + i, "gray" if i == 0 else "png"), c)
                 for c in range(3) for i in range(4)]
    art_val = [(_save(root, f"art/val/{c}_{i}.jpg", c, 450 + i, "jpg"), c) for c in range(3) for i in range(2)]
    art_test = [(_save(root, f"art/test/Gemälde {c} – {i}.png", c, 500 + i), c) for c in range(3) for i in range(2)]
    art_test.append((_save(root, "art/test/scan 16-bit.png", 0, 600, "gray16"), 0))
    art_test.append((_save(root, "art/test/druck cmyk.jpg", 1, 601, "cmyk"), 1))
    twin = root / "images" / "art/test/Gemälde 2 – 0 (copy).png"  # the same bytes under another name
    shutil.copyfile(root / "images" / art_test[4][0], twin)
    art_test.append((str(twin.relative_to(root / "images")), 2))
    _info(root, "art", "train", art_train)
    _info(root, "art", "val", art_val)
    _info(root, "art", "test", art_test)
    (root / "benchmark.json").write_text(json.dumps(DESCRIPTION, indent=1))
    return root


def _edit(root: Path, domain: str, split: str, change) -> None:
    path = root / "info_files" / domain / f"{split}.json"
    items = json.loads(path.read_text())
    change(items)
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1))


# What the corrupted twin breaks, as the validation report names it (check name, a fragment of the row/file).
DEFECTS = {
    "malformed JSON": ("info_file_format", "shop/val.json"),
    "missing field": ("info_file_format", "missing field 'class_id'"),
    "class id of the wrong type": ("info_file_format", "'class_id' must be an int"),
    "path leaving images/": ("info_file_format", "stay inside it"),
    "missing image": ("file_exists", "shop/train/gone.png"),
    "zero-byte image": ("image_decodes", "empty file (0 bytes)"),
    "truncated image": ("image_decodes", "cannot be decoded"),
    "text file as image": ("image_decodes", "not an image file PIL can read"),
    "decompression bomb": ("image_decodes", "decompression bomb"),
    "query without a positive": ("query_has_positive", "shop/query/lonely.png"),
    "query of a train class": ("query_not_a_train_class", "shop/query/leak.png"),
    "image listed twice": ("unique_image", "shop/index/i10_0.png"),
    "stray class id (inferred count)": ("train_labels_dense", "shop/train/stray.png"),
    "class id beyond num_train_classes": ("train_label_in_range", "art/train/klasse 9.png"),
    "negative class id": ("label_non_negative", "art/train/negative.png"),
}


def write_corrupted_benchmark(root: Path, outside: Path) -> Path:
    """The benchmark with every defect of ``DEFECTS`` at once, plus a symlink to an image in ``outside``
    (``dvc add`` stores a copy of its target, so a DVC-tracked benchmark holds a file there instead)."""
    write_benchmark(root)
    images = root / "images"
    (root / "info_files" / "shop" / "val.json").write_text('[{"path": "shop/val/0_0.png", "class_id": 0},')

    def shop_train(items):
        items[0].pop("class_id")
        items[1]["class_id"] = "x"
        items[2]["path"] = "../outside.png"
        items += [{"path": "shop/train/gone.png", "class_id": 0}, {"path": "shop/train/empty.png", "class_id": 1},
                  {"path": "shop/train/truncated.png", "class_id": 2}, {"path": "shop/train/notes.png", "class_id": 3},
                  {"path": "shop/train/bomb.png", "class_id": 0}, {"path": "shop/train/stray.png", "class_id": 1000}]
    _edit(root, "shop", "train", shop_train)
    (images / "shop/train/empty.png").write_bytes(b"")
    data = (images / "shop/train/0_3.png").read_bytes()
    (images / "shop/train/truncated.png").write_bytes(data[: len(data) // 2])
    (images / "shop/train/notes.png").write_text("not an image")
    Image.new("1", (20_000, 20_000)).save(images / "shop/train/bomb.png")  # 400 Mpx: PIL refuses to decode
    _save(root, "shop/train/stray.png", 1, 700)

    def shop_query(items):
        items += [{"path": _save(root, "shop/query/lonely.png", 99, 1), "class_id": 99},
                  {"path": _save(root, "shop/query/leak.png", 2, 2), "class_id": 2}]
    _edit(root, "shop", "query", shop_query)
    _edit(root, "shop", "index", lambda items: items.append(dict(items[0])))

    outside.mkdir(parents=True, exist_ok=True)
    _save(outside, "elsewhere.png", 0, 3)
    (images / "art/train/link.png").symlink_to(outside / "images" / "elsewhere.png")

    def art_train(items):
        items += [{"path": "art/train/link.png", "class_id": 0},
                  {"path": _save(root, "art/train/klasse 9.png", 9, 4), "class_id": 9},
                  {"path": _save(root, "art/train/negative.png", 1, 5), "class_id": -1}]
    _edit(root, "art", "train", art_train)
    return root

"""Inspecting the benchmark's image files: does each exist, decode completely, and have a usable mode and size?

Pure inspection, one row per image; the data validator turns the table into expectations. Decoding is
complete and uses the training loader, so a truncated file fails here with one sentence instead of in a
data-loader worker hours into training. PIL's global ``LOAD_TRUNCATED_IMAGES`` is left as it is (off).
Decoding stays within the loader's memory budget (``udon_core.data.decode_budget``), however many threads
inspect at once. A file the containment rule refuses is never opened. Each file read is also hashed
(SHA-256), which makes a byte-identical copy under another name visible at the cost of one more pass over
bytes already read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from udon_core.data.image_source import ImageSource, LooseImages, LooseReader, RecordReader
from udon_core.errors import ImageFileError

COLUMNS = ("exists", "decodes", "mode", "width", "height", "error", "sha256")


def inspect_image(path: Path) -> dict[str, object]:
    """``{exists, decodes, mode, width, height, error, sha256}`` of one file (never raises for a bad image).

    The file goes through the loader training and evaluation use (``open_rgb``: complete decode and the
    conversion to RGB), so what passes here is what they will read; ``mode`` is the file's own mode.
    """
    return inspect_record(LooseReader(path.parent, [path.name]), 0)


def inspect_record(reader: RecordReader, i: int) -> dict[str, object]:
    """``inspect_image`` of record ``i`` of an image source's reader, loose or packed. A packed record is
    decoded from its shard (a damaged shard is named in ``error``); its mode and size are the source
    image's, as the index recorded them, and ``sha256`` is of the stored bytes."""
    if not reader.exists(i):
        return {"exists": False, "decodes": False, "mode": None, "width": 0, "height": 0, "error": "missing",
                "sha256": None}
    try:
        image, mode = reader.open(i)
        width, height, mode = reader.original(i) or (image.width, image.height, mode)
        found = {"exists": True, "decodes": True, "mode": mode, "width": width, "height": height, "error": None}
        del image  # why: gives its share of the decode budget back (decode_budget) before the file is hashed
    except ImageFileError as err:
        found = {"exists": True, "decodes": False, "mode": None, "width": 0, "height": 0, "error": err.reason}
    return {**found, "sha256": reader.sha256(i)}


def sample_rows(manifest: pd.DataFrame, sample: int | None, seed: int = 0) -> pd.DataFrame:
    """All rows (``sample`` None or >= the size), else a seeded sample of ``sample`` rows, in manifest order."""
    if sample is None or sample >= len(manifest):
        return manifest
    picked = np.sort(np.random.default_rng(seed).choice(len(manifest), size=sample, replace=False))
    return manifest.iloc[picked]


def inspect_images(manifest: pd.DataFrame, images: ImageSource | Path, sample: int | None = None, seed: int = 0,
                   workers: int = 8, link_roots: tuple[Path, ...] = ()) -> pd.DataFrame:
    """The manifest's rows (or a seeded sample) with the inspection columns added, one image read per path,
    and ``content_twin`` (see ``content_twins``).

    ``images`` is the benchmark's image source (``image_source(root)``: loose files or a packed index) or its
    ``images/`` folder; ``path`` is relative to ``images/``. Rows whose path the containment rule refuses
    (the manifest's ``inside_root`` column where it has one, else the rule applied here with ``link_roots``)
    are not opened: ``exists`` False and ``error`` says why.
    """
    source = images if isinstance(images, ImageSource) else LooseImages(Path(images))
    rows = sample_rows(manifest, sample, seed)
    unique = list(dict.fromkeys(rows["path"]))
    refused = _refused(rows, source, link_roots)
    reader = source.reader(unique)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoders release the GIL
        found = dict(zip(unique, pool.map(
            lambda i: _not_opened(refused[unique[i]]) if unique[i] in refused else inspect_record(reader, i),
            range(len(unique)))))
    checks = pd.DataFrame([found[p] for p in rows["path"]], index=rows.index, columns=list(COLUMNS))
    out = pd.concat([rows, checks], axis=1)
    out["content_twin"] = content_twins(out)
    return out


def _refused(rows: pd.DataFrame, source: ImageSource, link_roots: tuple[Path, ...]) -> dict[str, str]:
    """``{path: reason}`` of the rows the containment rule refuses."""
    if "inside_root" in rows.columns:
        return {p: "not opened: the path leaves the data root (path_inside_root)"
                for p in rows.loc[~rows["inside_root"].astype(bool), "path"]}
    paths = pd.Series(list(dict.fromkeys(rows["path"])))
    located = source.locate(paths, link_roots)
    return {p: f"not opened: {reason}" for p, inside, reason in
            zip(paths, located["inside_root"], located["reason"], strict=True) if not inside}


def _not_opened(reason: str) -> dict[str, object]:
    return {"exists": False, "decodes": False, "mode": None, "width": 0, "height": 0, "error": reason, "sha256": None}


def content_twins(inspected: pd.DataFrame) -> pd.Series:
    """Per row: the path of a file with the same bytes listed in *another* info file of the same domain
    under another name (a copy is the same image: train/test leakage or a trivial positive), else None.

    Of each group of byte-identical files, rows of the group's first info file (in manifest order, so train
    first) are the originals and are not flagged; copies within one info file are left alone (real
    benchmarks hold exact duplicates, and the retrieval protocol handles them).
    """
    out = pd.Series([None] * len(inspected), index=inspected.index, dtype=object)
    identity = inspected["image_identity"] if "image_identity" in inspected.columns else inspected["path"]
    hashed = inspected.assign(_identity=identity).dropna(subset=["sha256"])
    hashed = hashed[hashed.duplicated(["domain", "sha256"], keep=False)]  # why: 2.8M rows, few duplicates
    for _, group in hashed.groupby(["domain", "sha256"], sort=False):
        if group["split"].nunique() < 2 or group["_identity"].nunique() < 2:
            continue  # one info file, or one file listed twice (unique_image reports that)
        first = group.iloc[0]
        copies = group[(group["split"] != first["split"]) & (group["_identity"] != first["_identity"])]
        out.loc[copies.index] = first["path"]
    return out

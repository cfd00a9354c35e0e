"""Inspecting the benchmark's image files: does each exist, decode completely, and have a usable mode and size?

Pure inspection, one row per image; the data validator turns the table into expectations. Decoding is
complete and uses the training loader, so a truncated file fails here with one sentence instead of in a
data-loader worker hours into training. PIL's global ``LOAD_TRUNCATED_IMAGES`` is left as it is (off).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from udon_core.data.transforms import open_rgb
from udon_core.errors import ImageFileError

COLUMNS = ("exists", "decodes", "mode", "width", "height", "error")


def inspect_image(path: Path) -> dict[str, object]:
    """``{exists, decodes, mode, width, height, error}`` of one file (never raises for a bad image).

    The file goes through the loader training and evaluation use (``open_rgb``: complete decode and the
    conversion to RGB), so what passes here is what they will read; ``mode`` is the file's own mode.
    """
    if not path.is_file():
        return {"exists": False, "decodes": False, "mode": None, "width": 0, "height": 0, "error": "missing"}
    try:
        image, mode = open_rgb(path)
    except ImageFileError as err:
        return {"exists": True, "decodes": False, "mode": None, "width": 0, "height": 0, "error": err.reason}
    return {"exists": True, "decodes": True, "mode": mode, "width": image.width, "height": image.height,
            "error": None}


def sample_rows(manifest: pd.DataFrame, sample: int | None, seed: int = 0) -> pd.DataFrame:
    """All rows (``sample`` None or >= the size), else a seeded sample of ``sample`` rows, in manifest order."""
    if sample is None or sample >= len(manifest):
        return manifest
    picked = np.sort(np.random.default_rng(seed).choice(len(manifest), size=sample, replace=False))
    return manifest.iloc[picked]


def inspect_images(manifest: pd.DataFrame, images_dir: Path, sample: int | None = None, seed: int = 0,
                   workers: int = 8) -> pd.DataFrame:
    """The manifest's rows (or a seeded sample) with the inspection columns added, one file read per path.

    ``images_dir`` is the benchmark's ``images/`` folder; ``path`` is relative to it.
    """
    rows = sample_rows(manifest, sample, seed)
    unique = list(dict.fromkeys(rows["path"]))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decoders release the GIL
        found = dict(zip(unique, pool.map(lambda p: inspect_image(Path(images_dir) / p), unique)))
    checks = pd.DataFrame([found[p] for p in rows["path"]], index=rows.index, columns=list(COLUMNS))
    return pd.concat([rows, checks], axis=1)

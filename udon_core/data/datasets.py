"""Datasets over UnED-style records: the benchmark's images (loose or packed), in record order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from udon_core.data.image_source import ImageSource, LooseImages, as_source
from udon_core.data.uned import ImageRecord


class ImageListDataset(Dataset):
    """Images of a list of records, in the given order; item = (transform(image), first label, index).

    The first label is what a classifier trains on; evaluation reads all labels from the records, so the
    dataset does not need to carry lists through the default collate.

    Args:
        root: the benchmark folder (loose or packed, see ``image_source``) or an ``ImageSource``.
        images_dir: read ``images_dir/<path>`` files instead (a plain folder of images).
        draft: decode JPEGs at a reduced scale that keeps both sides at least this many pixels (``open_rgb``).
    """

    def __init__(self, root: Path | ImageSource, records: Sequence[ImageRecord], transform: Callable,
                 images_dir: Path | None = None, draft: int | None = None) -> None:
        source = LooseImages(Path(images_dir)) if images_dir is not None else as_source(root)
        self.reader = source.reader([r.path for r in records])
        # why an array, not the records: the reader holds the paths already, and each forked DataLoader worker
        # would copy a list of Python objects as it touches their reference counts.
        self.labels = np.array([r.labels[0] for r in records], dtype=np.int64)
        self.transform, self.draft = transform, draft

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        image, _ = self.reader.open(i, self.draft)
        return self.transform(image), int(self.labels[i]), i

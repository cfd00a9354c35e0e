"""Datasets over UnED-style records: images read from ``<root>/images/<path>`` in record order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from udon_core.data.transforms import load_rgb
from udon_core.data.uned import IMAGES_DIR, ImageRecord


class ImageListDataset(Dataset):
    """Images of a list of records, in the given order; item = (image tensor [3, S, S], first label, index).

    The first label is what a classifier trains on; evaluation reads all labels from the records, so the
    dataset does not need to carry lists through the default collate.
    """

    def __init__(self, root: Path, records: Sequence[ImageRecord], transform: Callable, images_dir: Path | None = None) -> None:
        self.images_dir = Path(images_dir) if images_dir is not None else Path(root) / IMAGES_DIR
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        rec = self.records[i]
        return self.transform(load_rgb(self.images_dir / rec.path)), rec.labels[0], i

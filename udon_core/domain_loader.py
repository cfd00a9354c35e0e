"""Per-domain infinite batch streams, consumed only when the sampler draws that domain.

Reproducible by construction: the order is a seeded permutation per (domain, epoch) and every sample's
augmentation is seeded from its position in the stream, so a stream restarted at batch k yields exactly
the batches an uninterrupted one would, with or without worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from udon_core.data import ImageListDataset
from udon_core.uned import ImageRecord


class SeededAugmentDataset(Dataset):
    """Items addressed by ``(index, seed)``: the random transform runs under that seed."""

    def __init__(self, base: ImageListDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, label, _ = self.base[index]
        return image, label


class StreamBatches:
    """Batch sampler: an endless sequence of ``[(index, seed)] * batch`` starting at batch ``start``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0) -> None:
        if n < batch_size:
            raise ValueError(f"a domain has {n} training images, fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.n // self.batch_size  # drop_last, as the official tf.data pipeline
        batch = self.start
        while True:
            epoch, pos = divmod(batch, per_epoch)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=gen)[pos * self.batch_size:(pos + 1) * self.batch_size]
            base = (self.seed * 1_000_003 + batch) * self.batch_size
            yield [(int(i), base + j) for j, i in enumerate(order)]
            batch += 1


class DomainStream:
    """One domain's training batches; ``position`` (batches consumed) is all a checkpoint needs."""

    def __init__(self, root: Path, records: Sequence[ImageRecord], transform: Callable, batch_size: int,
                 seed: int, num_workers: int = 0, position: int = 0) -> None:
        self.dataset = SeededAugmentDataset(ImageListDataset(root, records, transform))
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.position = position
        self._iter: Iterator | None = None

    def _loader(self) -> DataLoader:
        sampler = StreamBatches(len(self.dataset), self.batch_size, self.seed, start=self.position)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: images ``[B, 3, S, S]`` and labels ``[B]``."""
        if self._iter is None:
            self._iter = iter(self._loader())
        images, labels = next(self._iter)
        self.position += 1
        return images, labels

"""Per-domain infinite batch streams, consumed only when the sampler draws that domain.

The official input pipeline gives each domain its own ``repeat()``-ed, shuffled tf.data iterator with
``batch(drop_remainder=True)`` (research/udon.md section 4). Here each domain's order is a seeded
permutation per epoch, and each sample's augmentation runs under a seed derived from its position in the
stream, so a stream restarted at batch k yields exactly the batches an uninterrupted one would, with or
without worker processes: the stream's ``position`` is its whole checkpoint state.

Difference from the official pipeline: it shuffles with a 256-example buffer (plus a 16-batch buffer)
over randomly sharded records; a full permutation per epoch is the ideal that approximates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from udon_core.data.datasets import ImageListDataset
from udon_core.data.image_source import ImageSource
from udon_core.data.uned import ImageRecord
from udon_core.errors import InvalidValueError


def stream_seed(seed: int, domain_index: int) -> int:
    """Independent 63-bit seeds per (run seed, domain), with no collisions between nearby values."""
    return int(np.random.SeedSequence([seed, domain_index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class SeededAugmentDataset(Dataset):
    """Items addressed by ``(index, seed)``: the random transform runs under that seed."""

    def __init__(self, base: ImageListDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        # why: torchvision's random transforms draw from torch's global CPU generator; fork it so the
        # trainer's RNG stream is untouched, and seed only the CPU generator (never CUDA's).
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            image, label, _ = self.base[index]
        return image, label


class StreamBatches:
    """Batch sampler: an endless sequence of ``[(index, seed)] * batch`` starting at batch ``start``.

    With ``shard = (rank, world_size)`` it yields only that rank's contiguous slice of every global batch,
    so the ranks of a data-parallel run together see exactly the batches of a single-process run.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, shard: tuple[int, int] = (0, 1)) -> None:
        if n < batch_size:
            raise InvalidValueError(f"{n} training images, fewer than one batch of {batch_size}")
        rank, world = shard
        if not 0 <= rank < world or batch_size % world:
            raise InvalidValueError(f"cannot take shard {rank} of {world} from batches of {batch_size}")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        per_rank = batch_size // world
        self._slice = slice(rank * per_rank, (rank + 1) * per_rank)

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.n // self.batch_size  # drop_last, as the official batch(drop_remainder=True)
        batch = self.start
        epoch, order = -1, np.empty(0, dtype=np.int64)
        while True:
            e, pos = divmod(batch, per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            idx = order[pos * self.batch_size:(pos + 1) * self.batch_size]
            base = batch * self.batch_size
            # Sample seeds: distinct per position in the stream, decorrelated across domains by self.seed.
            keys = [(int(i), (self.seed + base + j) % 2**63) for j, i in enumerate(idx)]
            yield keys[self._slice]
            batch += 1


class DomainStream:
    """One domain's training batches; ``position`` (batches consumed) is all a checkpoint needs.

    Args:
        num_workers: DataLoader worker processes for this domain (each domain has its own pool, started
            on its first batch and kept alive).
        pin_memory: pin host memory for faster copies to a GPU.
        shard: ``(rank, world_size)``: this process loads only its slice of each global batch of ``batch_size``.
        draft: decode JPEGs at a reduced scale keeping both sides at least this many pixels (``open_rgb``).

    ``root`` is the benchmark folder, loose or packed (``image_source``), or an ``ImageSource``.
    """

    def __init__(self, root: Path | ImageSource, records: Sequence[ImageRecord], transform: Callable,
                 batch_size: int, seed: int, num_workers: int = 0, position: int = 0, pin_memory: bool = False,
                 shard: tuple[int, int] = (0, 1), draft: int | None = None) -> None:
        self.dataset = SeededAugmentDataset(ImageListDataset(root, records, transform, draft=draft))
        self.batch_size, self.seed, self.num_workers, self.pin_memory = batch_size, seed, num_workers, pin_memory
        self.shard = shard
        self.position = position
        self._iter: Iterator | None = None
        # Fail now, not at the first draw, on a domain smaller than a batch or a batch that does not split.
        StreamBatches(len(self.dataset), batch_size, seed, shard=shard)

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self) -> DataLoader:
        sampler = StreamBatches(len(self.dataset), self.batch_size, self.seed, start=self.position, shard=self.shard)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory)

    def seek(self, position: int) -> None:
        """Continue from batch ``position`` (a restored checkpoint); the next batch is that one."""
        self.position, self._iter = position, None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch: uint8 images ``[B, 3, S, S]`` (``normalize`` them on the device) and labels ``[B]``."""
        if self._iter is None:
            self._iter = iter(self._loader())
        images, labels = next(self._iter)
        self.position += 1
        return images, labels

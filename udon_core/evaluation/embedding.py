"""Embedding extraction: images in record (file) order -> float32 unit vectors."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from udon_core.data.benchmark import BenchmarkSpec
from udon_core.data.datasets import ImageListDataset
from udon_core.data.image_source import IMAGE_SUFFIXES, ImageSource, as_source, folder_source
from udon_core.data.transforms import Preprocess, eval_decode_side, eval_transform, normalize
from udon_core.data.uned import ImageRecord, records_of
from udon_core.errors import InvalidValueError, MissingFileError, UnknownNameError
from udon_core.progress import progress as show_progress

EMBEDDINGS_FORMAT = "udon-embeddings/1"
_META_KEY = "__udon_meta__"


@torch.inference_mode()
def embed_records(
    model: nn.Module, root: Path | ImageSource, records: Sequence[ImageRecord], preprocess: Preprocess,
    batch_size: int = 128,
    device: str | torch.device = "cpu", num_workers: int = 0, progress: bool = True, desc: str = "embed",
    images_dir: Path | None = None,
) -> np.ndarray:
    """``[n, d]`` float32 L2-normalised embeddings of ``records``, in their order.

    ``model(x [B, 3, S, S]) -> [B, d]`` runs in eval mode (its train/eval mode is restored afterwards)
    under bf16 autocast on CUDA, fp32 on CPU; outputs are re-normalised in float32. Images are read from the
    benchmark at ``root`` (loose or packed; or an ``ImageSource``), or from ``images_dir/<path>`` when it is
    given; they travel as uint8 and are normalised on ``device``.
    """
    device = torch.device(device)
    was_training = model.training
    model = model.eval().to(device)
    dataset = ImageListDataset(root, records, eval_transform(preprocess), images_dir=images_dir,
                               draft=eval_decode_side(preprocess))
    loader = DataLoader(dataset, batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda")
    chunks = []
    try:
        for images, _, _ in show_progress(loader, desc=desc, enabled=progress):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model(normalize(images.to(device, non_blocking=True), preprocess))
            chunks.append(F.normalize(out.float(), dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def eval_files(spec: BenchmarkSpec, split: str) -> list[tuple[str, str]]:
    """(domain, info-file stem) pairs the ``split`` evaluation needs: queries and index, each once."""
    pairs = []
    for d in spec.domains:
        if split not in d.evals:
            raise UnknownNameError(f"domain '{d.name}' has no '{split}' evaluation split (has {sorted(d.evals)})")
        ev = d.evals[split]
        pairs += [(d.name, ev.query), (d.name, ev.index)]
    return list(dict.fromkeys(pairs))


def _model_preprocess(model: nn.Module) -> Preprocess:
    prep = getattr(getattr(model, "config", None), "preprocess", None)
    if not isinstance(prep, Preprocess):
        raise TypeError(f"{type(model).__name__} has no config.preprocess: pass preprocess= explicitly")
    return prep


def embed_benchmark(
    model_for: nn.Module | Callable[[str], nn.Module], root: Path | ImageSource, manifest: pd.DataFrame,
    spec: BenchmarkSpec,
    splits: Sequence[str] = ("test",), preprocess: Preprocess | None = None, label: str = "", **kw,
) -> dict[str, np.ndarray]:
    """``{"<domain>/<stem>": [n, d] float32}`` for every info file the eval ``splits`` need, in file order.

    Each file is embedded once, also when it is both the query and the index set. ``model_for`` is a
    model, or a function domain -> model (the "oracle teacher" protocol: each domain embedded by its own
    teacher head). ``preprocess`` defaults to the model's ``config.preprocess``; ``label`` names the model
    in the progress lines; ``kw`` goes to ``embed_records`` (batch_size, device, num_workers, progress).
    ``root`` is the benchmark folder or its ``ImageSource``; either way its images are located once (a packed
    index is read once, not once per info file).
    """
    root = as_source(root)
    pairs = list(dict.fromkeys(p for split in splits for p in eval_files(spec, split)))
    out: dict[str, np.ndarray] = {}
    current: tuple[str | None, nn.Module | None] = (None, None)
    for domain, stem in pairs:
        if current[0] != domain:  # one domain's model at a time (a teacher model holds a backbone copy)
            current = (domain, model_for if isinstance(model_for, nn.Module) else model_for(domain))
        model = current[1]
        prep = preprocess or _model_preprocess(model)
        out[f"{domain}/{stem}"] = embed_records(model, root, records_of(manifest, domain, stem), prep,
                                                desc=f"embed {label + ': ' if label else ''}{domain}/{stem}", **kw)
    return out


@dataclass
class EmbeddingSet:
    """The embeddings of a split's eval files, kept so a split can be re-scored without re-embedding.

    ``vectors["<domain>/<stem>"]`` is ``[n, d]`` float32 in info-file order (as ``embed_benchmark`` returns);
    ``source`` says what produced them (e.g. the model and, for oracle teachers, "teacher heads").
    """

    split: str
    vectors: dict[str, np.ndarray]
    source: str = ""

    def save(self, path: str | Path) -> Path:
        """One ``.npz`` file: the arrays under their keys, plus the split and source."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"format": EMBEDDINGS_FORMAT, "split": self.split, "source": self.source})
        with path.open("wb") as f:  # why: a file object keeps numpy from appending a second .npz suffix
            np.savez(f, **{_META_KEY: np.array(meta)}, **self.vectors)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingSet":
        """Read a file written by ``save``; a ValueError names a file that is not one."""
        if not zipfile.is_zipfile(path):  # np.load would read anything else as .npy or pickle
            raise InvalidValueError(f"{path}: cannot read embeddings: not an .npz archive")
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(str(z[_META_KEY])) if _META_KEY in z.files else {}
            if meta.get("format") != EMBEDDINGS_FORMAT:
                raise InvalidValueError(f"{path}: not a udon embeddings file (format {meta.get('format')!r})")
            vectors = {k: z[k].astype(np.float32, copy=False) for k in z.files if k != _META_KEY}
        return cls(meta["split"], vectors, meta.get("source", ""))


def embed_folder(model: nn.Module, folder: Path, **kw) -> tuple[list[str], np.ndarray]:
    """Embed every image of ``folder`` (sorted paths): (paths, ``[n, d]``). A benchmark folder, loose or
    packed, gives its images with paths relative to ``images/``; any other folder every image file under it,
    recursively, with paths relative to it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: not a folder of images")
    source = folder_source(folder)
    paths = source.list_paths()
    if not paths:
        raise MissingFileError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    records = [ImageRecord(p, (0,)) for p in paths]
    return paths, embed_records(model, source, records, model.config.preprocess, **kw)

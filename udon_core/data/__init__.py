"""Benchmarks and images: the benchmark description, UnED info files and manifests, image reading and
transforms, datasets and per-domain loaders, the checks validation runs, and the bundled demo benchmark.
"""

from __future__ import annotations

from udon_core.data.benchmark import (
    DEMO,
    UNED,
    BenchmarkSpec,
    DomainSpec,
    EvalSet,
    resolve_benchmark_spec,
    save_benchmark_spec,
)
from udon_core.data.datasets import ImageListDataset
from udon_core.data.demo import DemoConfig, MissingSourceError, build_demo_benchmark, tree_digest
from udon_core.data.domain_loader import DomainStream, stream_seed
from udon_core.data.image_checks import inspect_image, inspect_images, inspect_record, sample_rows
from udon_core.data.image_source import ImageSource, RecordReader, folder_source, image_source
from udon_core.data.manifest_checks import annotate_manifest, count_positives, leaked_labels
from udon_core.data.pack import PackConfig, PackProblem, PackResult, pack_benchmark
from udon_core.data.shards import PackedIndexError, is_packed, packing_of, read_pack_meta
from udon_core.data.transforms import (
    Preprocess,
    eval_decode_side,
    eval_transform,
    load_rgb,
    normalize,
    open_rgb,
    train_decode_side,
    train_transform,
)
from udon_core.data.uned import (
    IMAGES_DIR,
    BenchmarkData,
    ImageRecord,
    InfoFileError,
    InfoFileProblem,
    classes_source,
    info_file_path,
    num_train_classes,
    read_benchmark,
    read_info_file,
    read_manifest,
    records_of,
    write_info_file,
)

__all__ = [
    "annotate_manifest", "BenchmarkData", "BenchmarkSpec", "build_demo_benchmark", "classes_source",
    "count_positives", "DEMO", "DemoConfig", "DomainSpec", "DomainStream", "eval_decode_side", "eval_transform",
    "EvalSet", "folder_source", "image_source", "ImageListDataset", "ImageRecord", "IMAGES_DIR", "ImageSource",
    "info_file_path", "InfoFileError", "InfoFileProblem", "inspect_image", "inspect_images", "inspect_record",
    "is_packed", "leaked_labels", "load_rgb", "MissingSourceError", "normalize", "num_train_classes", "open_rgb",
    "pack_benchmark", "PackConfig", "PackedIndexError", "packing_of", "PackProblem", "PackResult", "Preprocess",
    "read_benchmark", "read_info_file", "read_manifest", "read_pack_meta", "RecordReader", "records_of",
    "resolve_benchmark_spec", "sample_rows", "save_benchmark_spec", "stream_seed", "train_decode_side",
    "train_transform", "tree_digest", "UNED", "write_info_file",
]

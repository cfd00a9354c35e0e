"""Ingest step: make the DVC-pinned benchmark present, then describe it as a manifest plus its data version."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from zenml import log_metadata, step

from integrations import dvc_store
from integrations.git import git_revision
from udon_core.data import BenchmarkSpec, image_source, packing_of, read_benchmark
from udon_core.errors import InvalidValueError


class DataConfig(BaseModel):
    """Where the benchmark lives and how it is versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: str = Field(default=".", description="the git + DVC repository holding the data")
    dvc_file: str = Field(default="data.dvc", description="the .dvc file pinning the benchmark folder")
    benchmark: str = Field(default="auto", description="'auto' (the folder's benchmark.json, else UnED), 'uned', 'demo' or a JSON path")
    domains: list[str] | None = Field(default=None, description="train and evaluate on these domains only")
    rebuild_missing: bool = Field(
        default=True, description="rebuild the bundled demo benchmark when neither the DVC cache nor the remote has it"
    )
    pinned_md5: str | None = Field(
        default=None, description="set by the runner from the .dvc file, so the step cache follows the data version"
    )
    pinned_path: str | None = Field(default=None, description="set by the runner: the path the .dvc file tracks")
    remote: str | None = Field(
        default=None, description="the DVC remote a step pulls the pinned version from where the repository is "
        "not present (the pod of a remote orchestrator); the runner sets the repository's default remote if unset")
    packing: str = Field(
        default="any", pattern=r"^(any|loose|keep-bytes|short-side [1-9][0-9]*)$",
        description="the form the run expects the pinned folder in, as `udon data pack` writes it: 'keep-bytes', "
        "'short-side N', 'loose' (image files) or 'any'; another form stops the ingest step saying how to pack it")


class DatasetVersion(BaseModel):
    """The data a run used: where it is, what it contains and exactly which version it is."""

    root: str
    benchmark: BenchmarkSpec
    dvc_md5: str
    dvc_file: str
    dvc_file_git_rev: str | None
    classes: dict[str, int]
    num_images: int
    classes_source: dict[str, str] = Field(default_factory=dict, description="per domain: given or inferred")
    dvc_cache: str | None = Field(default=None, description="the DVC cache folder: image links may point into it")
    info_file_problems: list[dict[str, Any]] = Field(
        default_factory=list, description="every defect the reader found in the info files; the validate step "
        "reports them with its own findings and stops the run")
    dvc_path: str | None = Field(default=None, description="the path the .dvc file tracks")
    dvc_remote: str | None = Field(default=None, description="the DVC remote holding this version, if any")

    def local_root(self) -> Path:
        """The benchmark folder in this process: ``root`` where it exists (the embedded stack, a shared
        volume), else this exact version pulled from the DVC remote into the data cache, keyed by its hash."""
        if Path(self.root).is_dir() or not (self.dvc_remote and self.dvc_path):
            return Path(self.root)
        return dvc_store.fetch_pinned(self.dvc_md5, self.dvc_path, self.dvc_remote)


def _build_demo(target: Path) -> None:
    from udon_core.data import build_demo_benchmark

    # why print: the expected case on a fresh clone (no DVC cache, no remote); the user should know why the
    # data step takes a while and that the result is checked against the pin.
    print(f"data: the pinned demo benchmark is in neither the DVC cache nor a remote (expected on a fresh "
          f"clone): rebuilding {target} from its packages, then checking it against the pin", flush=True)
    build_demo_benchmark(target, packed=True)  # packed, as data.dvc pins it


def _fetch(config: DataConfig) -> Path:
    if not (config.pinned_md5 and config.pinned_path and config.remote):
        raise dvc_store.DataVersionError(
            f"{Path(config.repo) / config.dvc_file} is not here and the run recorded no DVC remote to pull the "
            "data from: give the data repository a default remote (dvc remote add -d ...) and push the data")
    return dvc_store.fetch_pinned(config.pinned_md5, config.pinned_path, config.remote)


def _check_packing(target: Path, expected: str) -> str:
    """How ``target`` holds its images ('loose', 'keep-bytes', 'short-side N'); an error when the run expects
    another form (a loose UnED costs every pod ~1 h of DVC pull, README "Data at UnED scale")."""
    found = packing_of(target)
    if found != "loose":
        image_source(target)  # reads the index: a damaged one stops the run here, named
    if expected not in ("any", found):
        fix = ("use the loose folder it was packed from" if expected == "loose" else
               f"pack it (udon data pack <loose folder> <packed folder> --{expected}) and dvc add the packed folder")
        raise InvalidValueError(f"data.packing: this run expects the data as '{expected}', but {target} is "
                                f"'{found}': {fix}; or give --set data.packing={found}")
    return found


@step
def data_ingester(config: DataConfig) -> tuple[Annotated[pd.DataFrame, "manifest"], Annotated[DatasetVersion, "dataset"]]:
    """Pull (or rebuild and verify) the pinned benchmark, read its info files into a manifest."""
    repo = Path(config.repo).resolve()
    if (repo / config.dvc_file).is_file():
        how = dvc_store.ensure_data(repo, config.dvc_file, build=_build_demo if config.rebuild_missing else None)
        pin = dvc_store.read_pin(repo, config.dvc_file)
        target, md5, rev = pin.target, pin.md5, git_revision(repo, config.dvc_file)
        cache = str(dvc_store.cache_dir(repo))
    else:  # a step pod of a remote orchestrator: no repository here, the runner recorded the pin and the remote
        target, md5, rev, cache = _fetch(config), str(config.pinned_md5), None, None
        how = "fetched"
    packing = _check_packing(target, config.packing)
    # why collect: every info-file defect is reported in one validation report, not one per run; files are
    # read only inside the folder (and the DVC cache its links point into).
    data = read_benchmark(target, config.benchmark, config.domains, link_roots=(Path(cache),) if cache else ())
    spec, manifest = data.spec, data.manifest
    dataset = DatasetVersion(
        root=str(target), benchmark=spec, dvc_md5=md5, dvc_file=config.dvc_file, dvc_file_git_rev=rev,
        classes=data.classes, num_images=len(manifest), classes_source=data.classes_source,
        info_file_problems=[asdict(p) for p in data.problems],
        dvc_cache=cache, dvc_path=config.pinned_path, dvc_remote=config.remote,
    )
    log_metadata(
        metadata={"dvc_md5": md5, "dvc_file_git_rev": dataset.dvc_file_git_rev or "", "data_source": how,
                  "packing": packing,
                  "benchmark": spec.name, "num_images": len(manifest)},
        artifact_name="dataset", infer_artifact=True,
    )
    return manifest, dataset

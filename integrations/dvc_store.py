"""The DVC-tracked benchmark: read its pinned version, compare it with the workspace, pull or rebuild it.

The rule that matters: a ``.dvc`` file pins a content hash, and nothing here ever re-pins it. Data that
differs from the pin is an error the user resolves with ``dvc add`` (a new data version, reviewed in git)
or ``dvc checkout`` (discard the change).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml

from udon_core.errors import UdonUserError

WorkspaceState = Literal["clean", "missing", "modified"]
COMPLETE_MARK = ".udon-complete"  # a fetched data version is usable once this file is in its folder


class DataVersionError(UdonUserError, RuntimeError):
    """The data on disk, in the cache or in the remote does not match the pinned DVC version."""


@dataclass(frozen=True)
class DvcPin:
    """What a ``.dvc`` file pins: the tracked path (relative to the repo) and its content hash."""

    dvc_file: Path
    path: str
    md5: str
    nfiles: int | None

    @property
    def target(self) -> Path:
        return self.dvc_file.parent / self.path


def read_pin(repo: Path, dvc_file: str = "data.dvc") -> DvcPin:
    """Parse a single-output ``.dvc`` file; errors name the file and the missing field."""
    path = Path(repo) / dvc_file
    if not path.is_file():
        raise DataVersionError(f"{path}: DVC file not found (is '{repo}' the project repository?)")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        out = doc["outs"][0]
        return DvcPin(dvc_file=path, path=str(out["path"]), md5=str(out["md5"]), nfiles=out.get("nfiles"))
    except (yaml.YAMLError, KeyError, IndexError, TypeError) as err:
        raise DataVersionError(f"{path}: not a DVC file with one output ('outs[0].md5' and 'path'): {err}") from err


def workspace_hash(repo: Path, dvc_file: str = "data.dvc") -> str | None:
    """The DVC content hash of the tracked path as it is on disk now (None when it is absent)."""
    from dvc.repo import Repo

    pin = read_pin(repo, dvc_file)
    if not pin.target.exists():
        return None
    with Repo(str(repo)) as dvc_repo:
        out = dvc_repo.stage.collect(str(pin.dvc_file))[0].outs[0]
        return str(out.get_hash().value)


def cache_dir(repo: Path) -> Path:
    """Where this repository's DVC cache keeps file contents (workspace links point there with
    ``cache.type`` symlink or hardlink)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return Path(dvc_repo.cache.local.path).resolve()


def link_roots_of(folder: Path) -> tuple[Path, ...]:
    """The DVC cache of the repository holding ``folder`` (none outside a DVC repository): where a
    workspace's files may link to with ``cache.type`` symlink, so the containment rule of
    ``udon_core.data.containment`` accepts them."""
    for repo in (Path(folder).resolve(), *Path(folder).resolve().parents):
        if (repo / ".dvc").is_dir():
            return (cache_dir(repo),)
    return ()


def workspace_state(repo: Path, dvc_file: str = "data.dvc") -> WorkspaceState:
    """'clean' when the tracked path matches the pin, 'missing' when absent, 'modified' otherwise."""
    current = workspace_hash(repo, dvc_file)
    if current is None:
        return "missing"
    return "clean" if current == read_pin(repo, dvc_file).md5 else "modified"


def try_pull(repo: Path, dvc_file: str = "data.dvc") -> bool:
    """Check the pinned data out of the cache, or pull it from the default remote; False if neither has it."""
    from dvc.exceptions import DvcException
    from dvc.logger import set_loggers_level
    from dvc.repo import Repo

    target = str(read_pin(repo, dvc_file).dvc_file)
    # why quiet: DVC warns (twice, through two handlers) about cache files a fresh clone cannot have; the
    # caller says what happens instead (rebuild, or an error naming the missing version).
    with Repo(str(repo)) as dvc_repo, set_loggers_level(logging.ERROR):
        try:
            dvc_repo.pull(targets=[target])
        except DvcException:
            return False
    return workspace_state(repo, dvc_file) == "clean"


def store(repo: Path, dvc_file: str = "data.dvc") -> None:
    """Save clean workspace data into the DVC cache and push it to the default remote (if one is set)."""
    from dvc.repo import Repo

    path = read_pin(repo, dvc_file).dvc_file
    before = path.read_bytes()
    with Repo(str(repo)) as dvc_repo:
        dvc_repo.commit(str(path), force=True)
        if dvc_repo.config.get("core", {}).get("remote"):
            dvc_repo.push(targets=[str(path)])
    # why: `dvc commit` rewrites the .dvc file when the data differs; we only ever call it on clean data,
    # and this guard makes sure a bug can never turn into a silent re-pin.
    if read_pin(repo, dvc_file).dvc_file.read_bytes() != before:
        read_pin(repo, dvc_file).dvc_file.write_bytes(before)
        raise DataVersionError(f"{dvc_file} would have been re-pinned by 'dvc commit'; restored it")


def ensure_data(
    repo: Path, dvc_file: str = "data.dvc", build: Callable[[Path], None] | None = None
) -> Literal["present", "pulled", "built"]:
    """Make the pinned data version present on disk: use it, pull it, or rebuild and verify it.

    ``build(target)`` recreates the data from its sources (the bundled demo benchmark); the result must
    hash to exactly the pinned version, otherwise it is moved aside and a DataVersionError says why.
    """
    repo = Path(repo)
    pin = read_pin(repo, dvc_file)
    state = workspace_state(repo, dvc_file)
    if state == "clean":
        return "present"
    if state == "modified":
        raise DataVersionError(
            f"{pin.target} differs from the version pinned in {dvc_file} ({pin.md5}): run "
            f"'dvc add {pin.path}' to record a new data version, or 'dvc checkout {dvc_file}' to discard the change"
        )
    if try_pull(repo, dvc_file):
        return "pulled"
    if build is None:
        raise DataVersionError(f"{pin.target} is missing and neither the DVC cache nor the remote has {pin.md5}")
    build(pin.target)
    built = workspace_hash(repo, dvc_file)
    if built != pin.md5:
        rejected = pin.target.with_name(f"{pin.target.name}.rejected")
        shutil.rmtree(rejected, ignore_errors=True)
        pin.target.rename(rejected)
        raise DataVersionError(
            f"the rebuilt benchmark hashes to {built}, but {dvc_file} pins {pin.md5}; it was moved to {rejected}. "
            "Install the pinned packages (constraints.txt) and retry; the pin is never changed automatically"
        )
    store(repo, dvc_file)
    return "built"


def remote_url(repo: Path) -> str | None:
    """The URL of the repository's default DVC remote (local paths absolute), or None without one: where a
    process that does not have the repository pulls the pinned version from."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        name = dvc_repo.config.get("core", {}).get("remote")
        return str(dvc_repo.config["remote"][name]["url"]) if name else None


def require_shared_remote(remote: str | None) -> str:
    """``remote`` if pods elsewhere can pull from it (object storage, SSH, HTTP...), else a DataVersionError
    that says how to get one: a folder on this machine is not there for them."""
    if remote and urlsplit(remote).scheme not in ("", "file") and not Path(remote).is_absolute():
        return remote
    found = f"'{remote}' is a folder on this machine" if remote else "the data repository has no default remote"
    raise DataVersionError(
        f"data.remote: the pods of a cluster run pull the pinned data from the DVC remote, and {found}: push the "
        "data to object storage (dvc remote add -d store s3://BUCKET/PATH && dvc push) or give "
        "--set data.remote=s3://BUCKET/PATH")


def data_cache_root() -> Path:
    """Where fetched data versions are kept: $UDON_DATA_CACHE, else $UDON_HOME/data-cache, else the temp dir."""
    if os.environ.get("UDON_DATA_CACHE"):
        return Path(os.environ["UDON_DATA_CACHE"])
    if os.environ.get("UDON_HOME"):
        return Path(os.environ["UDON_HOME"]) / "data-cache"
    return Path(tempfile.gettempdir()) / "udon-data-cache"


def fetch_pinned(md5: str, path: str, remote: str, cache_root: Path | None = None) -> Path:
    """The data version ``md5`` (a DVC directory hash, tracked as ``path``), pulled from ``remote`` into
    ``<cache root>/<md5>/<path>``; a later call finds it there.

    For a process that has no copy of the repository (a step pod of a remote orchestrator): a throwaway DVC
    project holding only the pin pulls it, DVC checks every file against its hash, and the folder counts only
    once the whole version is in place (written under a temporary name, then renamed).
    """
    from dvc.exceptions import DvcException
    from dvc.logger import set_loggers_level
    from dvc.repo import Repo

    root = Path(cache_root or data_cache_root())
    dest = root / md5.removesuffix(".dir")
    if (dest / COMPLETE_MARK).is_file():
        return dest / path
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=".fetch-"))
    try:
        Repo.init(str(work), no_scm=True)
        (work / "data.dvc").write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": path, "hash": "md5"}]}))
        with Repo(str(work)) as dvc_repo, set_loggers_level(logging.ERROR):
            with dvc_repo.config.edit() as conf:
                conf["core"]["remote"] = "origin"
                conf["core"]["analytics"] = False
                conf["remote"]["origin"] = {"url": remote}
                conf["cache"]["type"] = "reflink,hardlink,copy"  # why: one copy on disk, not cache + workspace
            try:
                dvc_repo.pull(targets=[str(work / "data.dvc")])
            except DvcException as err:
                raise DataVersionError(f"cannot pull data version {md5} from the DVC remote {remote}: {err}") from err
        if workspace_hash(work, "data.dvc") != md5:
            raise DataVersionError(f"the data pulled from {remote} does not hash to the pinned {md5}")
        (work / COMPLETE_MARK).write_text(md5 + "\n")
        try:
            work.rename(dest)
        except OSError:  # another process finished the same version first: use theirs
            if not (dest / COMPLETE_MARK).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest / path

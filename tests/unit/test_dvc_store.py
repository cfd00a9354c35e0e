"""DVC versioning of the benchmark: states, pull from the remote, rebuild-and-verify, never re-pin."""

from __future__ import annotations

import shutil

import pytest

from integrations import dvc_store
from integrations.dvc_store import DataVersionError
from integrations.git import git_dirty, git_revision
from tests.repos import init_repo, track_data


def write_data(target, text="hello"):
    (target / "info").mkdir(parents=True, exist_ok=True)
    (target / "info" / "a.txt").write_text(text)
    (target / "b.txt").write_text("b")


@pytest.fixture
def repo(tmp_path):
    """A git + DVC repository with a local remote and a pushed, committed `data/` folder."""
    r = init_repo(tmp_path / "repo", remote=tmp_path / "remote")
    write_data(r / "data")
    track_data(r, "data v1", push=True)
    return r


def test_pin_and_states(repo):
    pin = dvc_store.read_pin(repo)
    assert pin.path == "data" and pin.md5.endswith(".dir") and pin.nfiles == 2
    assert dvc_store.workspace_state(repo) == "clean"
    (repo / "data" / "b.txt").write_text("changed")
    assert dvc_store.workspace_state(repo) == "modified"
    shutil.rmtree(repo / "data")
    assert dvc_store.workspace_state(repo) == "missing"


def test_modified_data_is_an_error_that_says_what_to_do(repo):
    (repo / "data" / "b.txt").write_text("changed")
    with pytest.raises(DataVersionError, match=r"differs from the version pinned in data.dvc.*dvc add data"):
        dvc_store.ensure_data(repo)


def test_missing_data_is_pulled_from_cache_or_remote(repo):
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    assert dvc_store.ensure_data(repo) == "pulled"
    assert (repo / "data" / "info" / "a.txt").read_text() == "hello"


def test_rebuild_when_nothing_has_it_must_match_the_pin(repo, tmp_path):
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "remote")
    assert dvc_store.ensure_data(repo, build=write_data) == "built"
    assert dvc_store.workspace_state(repo) == "clean"
    assert (tmp_path / "remote").exists()  # the rebuilt version was pushed for the next machine


def test_a_rebuild_with_other_bytes_is_rejected_and_the_pin_kept(repo, tmp_path):
    before = (repo / "data.dvc").read_text()
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "remote")
    with pytest.raises(DataVersionError, match=r"rebuilt benchmark hashes to .* but data.dvc pins"):
        dvc_store.ensure_data(repo, build=lambda t: write_data(t, "other"))
    assert (repo / "data.dvc").read_text() == before
    assert (repo / "data.rejected" / "info" / "a.txt").read_text() == "other"
    assert not (repo / "data").exists()


def test_missing_without_builder(repo, tmp_path):
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(tmp_path / "remote")
    with pytest.raises(DataVersionError, match="neither the DVC cache nor the remote"):
        dvc_store.ensure_data(repo)


def test_bad_dvc_file_is_named(tmp_path):
    with pytest.raises(DataVersionError, match="DVC file not found"):
        dvc_store.read_pin(tmp_path)
    (tmp_path / "data.dvc").write_text("outs: []\n")
    with pytest.raises(DataVersionError, match=r"data.dvc: not a DVC file with one output"):
        dvc_store.read_pin(tmp_path)


def test_git_revision_and_dirty(repo):
    assert len(git_revision(repo, "data.dvc")) == 40
    assert git_dirty(repo) is False
    (repo / "data.dvc").write_text((repo / "data.dvc").read_text() + "\n")
    assert git_dirty(repo) is True


def test_a_pod_without_the_repository_fetches_the_pinned_version_by_hash(repo, tmp_path):
    pin, remote = dvc_store.read_pin(repo), dvc_store.remote_url(repo)
    assert remote == str(tmp_path / "remote")
    cache = tmp_path / "pod-cache"
    got = dvc_store.fetch_pinned(pin.md5, pin.path, remote, cache)
    assert got == cache / pin.md5.removesuffix(".dir") / "data"
    assert (got / "info" / "a.txt").read_text() == "hello" and (got / "b.txt").read_text() == "b"
    assert [p.name for p in cache.iterdir()] == [got.parent.name]  # no half-written folder left behind
    shutil.rmtree(tmp_path / "remote")
    assert dvc_store.fetch_pinned(pin.md5, pin.path, remote, cache) == got  # found by hash, not pulled again


def test_a_version_the_remote_lacks_is_named_and_leaves_nothing(repo, tmp_path):
    pin, cache = dvc_store.read_pin(repo), tmp_path / "pod-cache"
    missing = "0" * 32 + ".dir"
    with pytest.raises(DataVersionError, match=f"cannot pull data version {missing} from the DVC remote"):
        dvc_store.fetch_pinned(missing, pin.path, dvc_store.remote_url(repo), cache)
    assert list(cache.iterdir()) == []


def test_a_step_in_another_pod_reads_the_dataset_artifact_from_the_remote(repo, tmp_path, monkeypatch):
    from steps.data_ingester import DatasetVersion

    pin = dvc_store.read_pin(repo)
    here = DatasetVersion.model_construct(root=str(repo / "data"), dvc_md5=pin.md5, dvc_path=pin.path,
                                          dvc_remote=dvc_store.remote_url(repo))
    assert here.local_root() == repo / "data"  # the ingesting machine's folder, where it exists
    monkeypatch.setenv("UDON_DATA_CACHE", str(tmp_path / "pod-cache"))
    elsewhere = here.model_copy(update={"root": str(tmp_path / "ingester-pod" / "data")})
    got = elsewhere.local_root()
    assert got == tmp_path / "pod-cache" / pin.md5.removesuffix(".dir") / "data"
    assert (got / "info" / "a.txt").read_text() == "hello"


@pytest.mark.parametrize("remote", ["s3://bucket/dvc", "gs://bucket/dvc", "ssh://host/srv/dvc", "https://h/dvc"])
def test_a_cluster_run_accepts_storage_its_pods_can_reach(remote):
    assert dvc_store.require_shared_remote(remote) == remote


@pytest.mark.parametrize("remote, found", [("/srv/dvc-store", "'/srv/dvc-store' is a folder on this machine"),
                                           ("file:///srv/dvc", "is a folder on this machine"),
                                           (None, "the data repository has no default remote")])
def test_a_cluster_run_refuses_a_remote_only_this_machine_has(remote, found):
    with pytest.raises(DataVersionError, match=f"data.remote: .*{found}.*--set data.remote=s3://BUCKET/PATH"):
        dvc_store.require_shared_remote(remote)


def test_a_pod_fetches_a_packed_benchmark_as_its_shards_and_reads_it(tmp_path):
    from tests.unit.tiny_benchmark import write_tiny_benchmark
    from udon_core.data import PackConfig, image_source, is_packed, pack_benchmark, tree_digest

    repo = init_repo(tmp_path / "repo", remote=tmp_path / "remote")
    pack_benchmark(write_tiny_benchmark(tmp_path / "loose"), repo / "data", PackConfig(workers=1), progress=False)
    track_data(repo, "packed v1", push=True)
    pin = dvc_store.read_pin(repo)
    assert pin.nfiles == 10  # per domain and info file: the info file and one shard; the index, pack.json
    got = dvc_store.fetch_pinned(pin.md5, pin.path, dvc_store.remote_url(repo), tmp_path / "pod-cache")
    assert is_packed(got) and tree_digest(got) == tree_digest(repo / "data")
    reader = image_source(got).reader(["shapes/train/0_0.png"])
    assert reader.open(0)[0].size == (16, 16)

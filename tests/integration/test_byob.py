"""A user's own benchmark through the whole pipeline: described by benchmark.json, versioned by DVC.

The clean benchmark trains, is evaluated and registered, prints its validation warnings, and leaves the
home directory untouched; its corrupted twin stops the run before training with every defect named in one
report, as one message without a traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.byob import DEFECTS, write_benchmark, write_corrupted_benchmark
from tests.integration.conftest import tiny_run_config
from tests.repos import init_repo, sh, track_data

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _repo(base: Path, write, cache_type: str | None = None) -> Path:
    repo = init_repo(base / "repo", remote=base / "remote")
    if cache_type:
        sh(repo, "dvc", "config", "cache.type", cache_type)
    write(repo / "data")
    track_data(repo, "our benchmark", push=True)
    return repo


def test_our_own_benchmark_runs_end_to_end_and_writes_nothing_to_home(tmp_path):
    # cache.type symlink: every image becomes a link into .dvc/cache, which must not read as "leaves the root"
    repo = _repo(tmp_path, write_benchmark, cache_type="symlink")
    assert (repo / "data" / "images" / "shop" / "index" / "i10_0.png").is_symlink()
    config = tiny_run_config(repo, tmp_path / "run.yaml", registry={"model_name": "udon-byob"})
    home = tmp_path / "home"
    home.mkdir()
    # what a user's shell has: no test isolation variables, only HOME and UDON_HOME (as the Makefile sets it)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "UDON_HOME": str(tmp_path / "udon"), "LANG": "C.UTF-8"}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Data validation: passed" in out and "warning(s):" in out
    assert "[warning] image_mode" in out and "druck cmyk.jpg" in out  # converted without a colour profile
    assert "full report:" in out and "Registered model: udon-byob version 1" in out
    assert "Traceback" not in out
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    # the validation report is an artifact of the training run, page and JSON
    import mlflow

    (line,) = [x for x in out.splitlines() if x.startswith("MLflow UI:")]
    words = shlex.split(line)
    uri = words[words.index("--backend-store-uri") + 1]
    client = mlflow.MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    found = {r.info.run_id: [a.path for a in client.list_artifacts(r.info.run_id, "validation")] for r in runs}
    (logged,) = [paths for paths in found.values() if paths]
    assert sorted(logged) == ["validation/report.html", "validation/report.json"]


def test_every_defect_is_named_in_one_run_as_one_message(tmp_path):
    from pipelines.cli import cli

    repo = _repo(tmp_path, lambda root: write_corrupted_benchmark(root, tmp_path / "outside"))
    config = tiny_run_config(repo, tmp_path / "run.yaml", registry={"model_name": "udon-byob-broken"})
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 2, result.output
    text = result.output
    assert text.startswith("error: pipeline run") and "step 'data_validator' failed" in text
    assert "Traceback" not in text and text.count("step 'data_validator' failed") == 1
    missing = {name: (check, fragment) for name, (check, fragment) in DEFECTS.items()
               if check not in text or fragment not in text}
    assert not missing, text


def test_a_hostile_benchmark_ends_in_one_report_or_one_sentence(tmp_path):
    """Defects of every class of the hostile set at once: one validation report naming each, no traceback;
    a description with a lax type: one sentence naming the field (issue #25)."""
    from pipelines.cli import cli
    from tests.hostile import VARIANTS

    picked = {"query info file is bad JSON": "info_file_format", "NUL in an image path": "must not contain NUL",
              "./ in a test path": "unique_image", "byte-identical copy in test": "unique_content",
              "huge class id, inferred count": "must lie between"}

    def write(root):
        write_benchmark(root)
        for variant in VARIANTS:
            if variant.name in picked:
                variant.make(root, tmp_path / "outside")

    repo = _repo(tmp_path / "hostile", write)
    config = tiny_run_config(repo, tmp_path / "run.yaml", registry={"model_name": "udon-byob-hostile"})
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 2 and "step 'data_validator' failed" in result.output, result.output
    assert "Traceback" not in result.output and all(f in result.output for f in picked.values()), result.output

    def lax(root):
        write_benchmark(root)
        doc = json.loads((root / "benchmark.json").read_text())
        doc["domains"][1]["num_train_classes"] = "3"
        (root / "benchmark.json").write_text(json.dumps(doc))

    repo = _repo(tmp_path / "lax", lax)
    config = tiny_run_config(repo, tmp_path / "lax.yaml", registry={"model_name": "udon-byob-lax"})
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "step 'data_ingester' failed" in result.output
    assert 'domains[1].num_train_classes: must be a whole number from 1 to 1,000,000 (or absent: inferred from the ' \
           'data), got "3" (a string)' in result.output

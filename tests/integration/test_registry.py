"""The gated registry on real MLflow and ZenML: gate decisions, promotion, rollback, listings, lineage,
retraining only when the data changed. Each run after the first reuses the trained model from the cache,
so only the register and promote steps run again."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.integration.conftest import commit_data, tiny_run_config

pytestmark = pytest.mark.slow
MODEL = "udon-gate-test"


def _run(repo, path, steps=None, **gate):
    from pipelines.run import run_pipeline

    sections = {"registry": {"model_name": MODEL, "gate": gate}}
    if steps is not None:
        sections["training"] = {"train": {"steps": steps, "batch_size": 8, "frozen_steps": 0, "log_every": 1}}
    return run_pipeline(tiny_run_config(repo, path, **sections))


def _standing(registry) -> dict[str, tuple[tuple[str, ...], str, str]]:
    """version -> (MLflow aliases, udon.stage tag, ZenML stage)."""
    from zenml.client import Client

    out = {}
    for v in registry.versions():
        zen = Client().get_model_version(model_version_name_or_number_or_id=v.tags["zenml.model_version_id"])
        out[v.version] = (v.aliases, v.stage, str(zen.stage))
    return out


@pytest.fixture(scope="module")
def registry(tiny_repo, tmp_path_factory):
    from integrations.mlflow_tracking import mlflow_tracking_uri
    from integrations.model_registry import ModelRegistry
    from pipelines.stack import ensure_local_stack

    cfg = tmp_path_factory.mktemp("gate")
    first = _run(tiny_repo, cfg / "first.yaml")
    assert first.gate_verdict["decision"] == "promote"
    # a deliberately worse model: 1 step instead of 6; no domain may lose anything
    second = _run(tiny_repo, cfg / "second.yaml", steps=1, max_domain_regression=0.0)
    assert second.gate_verdict["decision"] == "hold"
    assert second.registration["version"] == "2"
    ensure_local_stack()
    return ModelRegistry(MODEL, mlflow_tracking_uri()), second, cfg


def _cli(*args):
    from pipelines.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_gate_promotes_the_first_model_and_holds_a_challenger(registry):
    reg, second, _ = registry
    assert _standing(reg) == {"2": (("challenger",), "staging", "staging"),
                              "1": (("champion",), "production", "production")}
    v2 = reg.version("2")
    assert v2.tags["gate.verdict"] == "hold" and second.gate_verdict["compared_with"] == "1"
    regressions = [r for r in second.gate_verdict["reasons"] if r.startswith("regression:")]
    assert regressions and all(" change -" in r and r.endswith("(FAIL)") for r in regressions)
    review = {f.path for f in reg.client.list_artifacts(v2.run_id, "review")}
    assert review == {"review/promotion_review.md", "review/promotion_review.html"}
    text = reg.run_text("2", "review/promotion_review.md")
    assert "Gate verdict: HOLD" in text and "champion v1" in text and "data.dvc_md5" in text
    assert all(f"- {r}" in text for r in regressions)  # each regressed domain, metric and by how much
    # what changed: only the number of steps (same data, same code), in the Markdown and in the HTML page
    assert "## What changed since champion v1" in text and "| config train.steps | 6 | 1 |" in text
    assert "data version (DVC md5)" not in text
    assert "<td>config train.steps</td><td>6</td><td>1</td>" in reg.run_text("2", "review/promotion_review.html")
    # the registered model is tied to the benchmark its versions were trained and evaluated on
    bound = reg.client.get_registered_model(MODEL).tags
    assert bound["udon.benchmark"] == v2.tags["data.benchmark"] == "demo"
    assert bound["udon.benchmark_sha256"] == v2.tags["data.benchmark_sha256"]


def test_promote_and_rollback_keep_mlflow_and_zenml_in_step(registry):
    reg, _, _ = registry
    refused = _cli("promote", "2", "--reason", "reviewed: faster to train", "--model", MODEL)
    assert refused.exit_code == 2 and "the gate's verdict on version 2 is hold (" in refused.output
    assert "add --force" in refused.output and reg.champion().version == "1"
    result = _cli("promote", "2", "--reason", "reviewed: faster to train", "--force", "--model", MODEL)
    assert result.exit_code == 0, result.output
    assert "recorded as an override of the gate's verdict hold" in result.output
    assert _standing(reg) == {"2": (("champion",), "production", "production"),
                              "1": ((), "archived", "archived")}
    assert reg.version("2").tags["udon.promotion_reason"] == "reviewed: faster to train"
    result = _cli("rollback", "--reason", "latency regression", "--model", MODEL)
    assert result.exit_code == 0 and "version 1 is the champion again; version 2 archived" in result.output
    assert _standing(reg) == {"2": ((), "archived", "archived"), "1": (("champion",), "production", "production")}
    assert [e["action"] for e in reg.history()] == ["promote", "promote", "rollback"]
    again = _cli("rollback", "--model", MODEL)
    assert again.exit_code == 2 and "first champion" in again.output
    assert _cli("promote", "7", "--reason", "x", "--model", MODEL).output.startswith(
        f"error: model '{MODEL}' has no version 7")


def test_models_and_lineage_show_the_chain(registry, tiny_repo):
    from integrations import dvc_store

    reg, _, _ = registry
    listing = _cli("models", "--model", MODEL)
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[1].split()[:4] == ["version", "stage", "aliases", "gate"]
    assert any(line.split()[:4] == ["1", "production", "champion", "promote"] for line in lines)
    chain = _cli("lineage", "1", "--model", MODEL)
    assert chain.exit_code == 0, chain.output
    pin = dvc_store.read_pin(tiny_repo)
    for expected in (f"DVC md5: {pin.md5}", "git revision of data.dvc:", "git commit:",
                     "step model_trainer: completed (at registration)", "suite: demo-manifest", "passed: True",
                     '"steps": 6', "promote v1 by udon-gate"):
        assert expected in chain.output, expected
    # read from the lineage document recorded with the version: MLflow only, no ZenML start
    assert json.loads(reg.run_text("1", "lineage.json"))["zenml"]["steps_at_registration"]["model_trainer"]
    challenger = _cli("lineage", "2", "--model", MODEL)
    changes = challenger.output.split("Changes against champion v1\n", 1)[1].split("\nPromotions")[0]
    assert "  config train.steps: 6 -> 1" in changes.splitlines() and "DVC" not in changes  # same data
    assert "over the gate's verdict hold (" in challenger.output  # the override recorded by the promotion


def test_an_identical_rerun_judges_again_instead_of_replaying_a_cached_verdict(registry, tiny_repo):
    reg, _, cfg = registry
    again = _run(tiny_repo, cfg / "again.yaml")  # the first run's configuration, top-level enable_cache: true
    status = {name: s.rsplit(".", 1)[-1] for name, s, _ in again.steps}
    assert status["model_trainer"] == status["model_registrar"] == "cached"
    assert status["model_promoter"] == "completed"


_KILLED_PROMOTE = """
import os, signal, sys
import integrations.model_registry as registry

def die(*args):  # kill -9 when ZenML's stage is about to follow MLflow's alias
    os.kill(os.getpid(), signal.SIGKILL)

registry._set_zenml_stage = die
from pipelines.cli import main

sys.argv = ["udon", "promote", sys.argv[1], "--reason", "killed half way", "--force", "--model", sys.argv[2]]
main()
"""


def test_a_promotion_killed_half_way_is_repaired_by_the_next_command(registry, tmp_path):
    """kill -9 between MLflow's alias move and ZenML's stage: the next `udon models` puts both back to the last
    recorded champion."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    reg, _, _ = registry
    champion, before = reg.champion().version, _standing(reg)
    other = next(v for v in before if v != champion)
    script = tmp_path / "killed_promote.py"  # a file: ZenML derives the source root from the main module's path
    script.write_text(_KILLED_PROMOTE)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(script), other, MODEL], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert done.returncode == -9, done.stderr[-3000:]
    assert reg.champion() is None or reg.champion().version != champion or _standing(reg) != before
    listing = _cli("models", "--model", MODEL)
    assert listing.exit_code == 0, listing.output
    assert f"promote of version {other} by process" in listing.output and "undone" in listing.output
    assert _standing(reg) == before and reg.champion().version == reg.champion_chain()[-1] == champion


def test_retrain_runs_only_when_the_data_changed(registry, tiny_repo):
    reg, _, cfg = registry
    config = tiny_run_config(tiny_repo, cfg / "retrain.yaml", registry={"model_name": MODEL})
    result = _cli("retrain", "--config", str(config), "--if-data-changed", "--report", str(cfg / "ci.json"))
    assert result.exit_code == 3, result.output
    assert "data unchanged" in result.output
    assert json.loads((cfg / "ci.json").read_text()) == {"ran": False, "data_md5": reg.version("1").tags[
        "data.dvc_md5"], "champion": "1"}
    # one image changes: the DVC hash differs, so the same command trains and registers a new version
    changed = _copy_repo(tiny_repo, cfg / "changed-repo")
    image = next((changed / "data" / "images").rglob("*.png"))
    from PIL import Image

    with Image.open(image) as im:
        im.rotate(90).save(image)
    commit_data(changed, "rotate one image")
    config = tiny_run_config(changed, cfg / "changed.yaml", registry={"model_name": MODEL})
    result = _cli("retrain", "--config", str(config), "--if-data-changed", "--report", str(cfg / "ci2.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((cfg / "ci2.json").read_text())
    assert report["ran"] and report["data_md5"] != reg.version("1").tags["data.dvc_md5"]
    assert reg.version(report["version"]).tags["data.dvc_md5"] == report["data_md5"]


def test_a_model_below_the_floors_is_rejected_and_gets_no_alias(registry, tiny_repo):
    reg, _, cfg = registry
    champion = reg.champion().version
    outcome = _run(tiny_repo, cfg / "floors.yaml", min_mmp_at_5=0.99)
    assert outcome.gate_verdict["decision"] == "reject"
    version = outcome.registration["version"]
    assert reg.version(version).aliases == () and reg.version(version).tags["gate.verdict"] == "reject"
    assert reg.champion().version == champion  # a rejected model never displaces the champion


def _copy_repo(repo, dest):
    """A copy of the tiny repo (git, DVC cache and remote config included) to change without touching others."""
    import shutil

    shutil.copytree(repo, dest)
    return dest


_CONTENDER = """
import json, sys
from integrations.model_registry import ModelRegistry, RegistryError
reg = ModelRegistry(sys.argv[1], sys.argv[2])
done = []
for round in range(int(sys.argv[4])):
    for action in ("promote", "rollback"):
        try:
            reg.promote(sys.argv[3], reason=f"round {round}") if action == "promote" else reg.rollback(f"round {round}")
            done.append(action)
        except RegistryError:
            pass  # already the champion, or nothing to roll back to: the other process got there first
print(json.dumps(done))
"""


def test_concurrent_promotions_and_rollbacks_leave_one_champion_and_a_complete_history(registry):
    """Two processes promote different versions and roll back, 20 rounds each, at the same moment."""
    import subprocess
    import sys
    from pathlib import Path

    reg, _, _ = registry
    before = len(reg.history())
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, MODEL, reg.client.tracking_uri, version, "20"],
                              cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for version in ("1", "2")]
    outputs = [p.communicate(timeout=400) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    done = [a for out, _ in outputs for a in json.loads(out.strip().splitlines()[-1])]
    assert len(reg.history()) == before + len(done)  # no event lost to a concurrent write
    standing = _standing(reg)
    champions = [v for v, (aliases, _, _) in standing.items() if "champion" in aliases]
    assert len(champions) == 1 and champions[0] == reg.champion_chain()[-1]
    for version, (aliases, stage, zen_stage) in standing.items():
        assert (stage == "production") == (zen_stage == "production") == ("champion" in aliases), standing

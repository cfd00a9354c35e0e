"""Resolving a run configuration: overrides, validation at the boundary, the data version in the cache key."""

from __future__ import annotations

import pytest
import yaml

from pipelines.run import ConfigError, deep_merge, parse_override, resolve_config
from tests.repos import init_repo, track_data


def test_parse_override_builds_a_nested_dict_with_yaml_values():
    assert parse_override("training.train.steps=10") == {"training": {"train": {"steps": 10}}}
    assert parse_override("data.domains=[emoji, glyphs]") == {"data": {"domains": ["emoji", "glyphs"]}}
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("training.train.steps")


def test_deep_merge_keeps_siblings():
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


@pytest.fixture
def repo(tmp_path):
    init_repo(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("x")
    track_data(tmp_path)
    return tmp_path


def write(path, doc):
    path.write_text(yaml.safe_dump(doc))
    return path


def test_resolve_adds_the_data_version_and_validates(repo):
    cfg = write(repo / "run.yaml", {"parameters": {"data": {"repo": str(repo)}}})
    doc = resolve_config(cfg, ["evaluation.split=val"])
    md5 = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert doc["parameters"]["data"]["pinned_md5"] == md5
    assert doc["parameters"]["evaluation"]["split"] == "val"
    assert set(doc["parameters"]) == {"data", "validation", "training", "evaluation", "registry"}
    assert "data_ingester" not in doc.get("steps", {})


def test_missing_data_runs_ingest_uncached_with_the_same_parameters(repo):
    import shutil

    cfg = write(repo / "run.yaml", {"parameters": {"data": {"repo": str(repo)}}})
    present = resolve_config(cfg)
    shutil.rmtree(repo / "data")
    missing = resolve_config(cfg)
    assert missing["parameters"] == present["parameters"]  # same cache key as later runs
    assert missing["steps"]["data_ingester"]["enable_cache"] is False


def test_modified_data_fails_before_the_run(repo):
    (repo / "data" / "x.txt").write_text("y")
    with pytest.raises(Exception, match="differs from the version pinned"):
        resolve_config(write(repo / "run.yaml", {"parameters": {"data": {"repo": str(repo)}}}))


@pytest.mark.parametrize(
    "params, fragment",
    [({"trainig": {}}, "unknown parameter section(s) ['trainig']"),
     ({"evaluation": {"protocol": "mixed"}}, "field 'evaluation.protocol'"),
     ({"data": {"repo": ".", "typo": 1}}, "field 'data.typo'")],
)
def test_bad_configuration_names_the_file_and_field(repo, params, fragment):
    cfg = write(repo / "run.yaml", {"parameters": params})
    with pytest.raises(ConfigError) as err:
        resolve_config(cfg)
    assert str(cfg) in str(err.value) and fragment in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="run configuration not found"):
        resolve_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["zenml.yaml", "configs/uned.yaml", "configs/schedule.yaml"])
def test_shipped_run_configurations_are_valid_zenml_run_configurations(name, repo):
    from pathlib import Path

    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / name).read_text())
    shipped["parameters"]["data"]["repo"] = str(repo)
    doc = resolve_config(write(repo / "run.yaml", shipped))
    run_config = PipelineRunConfiguration.model_validate(doc)  # what ZenML does with the file
    if name == "configs/schedule.yaml":
        assert run_config.schedule.cron_expression == "0 3 * * 1"
        assert doc["parameters"]["registry"]["gate"]["auto_promote"] is False


def test_the_ci_workflow_calls_retrain_with_options_that_exist():
    import shlex
    from pathlib import Path

    from pipelines.cli.registry import EXIT_UNCHANGED, retrain_cmd

    workflow = yaml.safe_load((Path(__file__).resolve().parents[2] / ".github/workflows/retrain.yml").read_text())
    assert workflow[True]["push"]["paths"] == ["data.dvc"] and workflow[True]["schedule"]  # YAML 1.1: on -> True
    script = next(s["run"] for s in workflow["jobs"]["retrain"]["steps"] if "udon retrain" in s.get("run", ""))
    line = next(x for x in script.splitlines() if "udon retrain" in x).strip()
    args = shlex.split(line)[2:]
    ctx = retrain_cmd.make_context("retrain", args)  # raises on an option the command does not have
    assert ctx.params["if_data_changed"] and str(ctx.params["config_path"]) == "configs/uned.yaml"
    assert f'"$code" -ne {EXIT_UNCHANGED}' in script


def test_pod_overrides_leave_what_they_do_not_name_to_the_method_preset():
    from udon_core.training import RunFileError, TrainingJobConfig, apply_overrides

    config = TrainingJobConfig.model_validate({"train": {"steps": 20}})
    joint = apply_overrides(config, ["train.method=ujcrr", "model.backbone.img_size=64"]).train
    assert (joint.student_classifier, joint.student_head_group, joint.loss.kl_weight) == ("joint", "backbone", 0.0)
    assert joint.steps == 20  # set by the run file, so the preset's 7 epochs do not replace it
    assert apply_overrides(config, ["train.method=udon"]).train.student_head_group == "heads"
    with pytest.raises(RunFileError, match="expected KEY=VALUE"):
        apply_overrides(config, ["train.steps"])

"""The chain behind a registered version, from the registry back to the data, as `udon lineage` prints it.

MLflow version -> MLflow run -> ZenML pipeline run and its steps -> data version (DVC md5, git revision of
``data.dvc``) -> the validation report -> code version -> the training config -> what differs from the
champion (or, for the champion, from the champion before it) -> the gate and promotions.
"""

from __future__ import annotations

import json
from typing import Any

from integrations.mlflow_tracking import LINEAGE_ARTIFACT
from integrations.model_registry import ModelRegistry, RegistryError, VersionInfo
from udon_core.registry import differences

Section = tuple[str, list[tuple[str, str]]]


def _zenml_run(info: VersionInfo) -> Any | None:
    from zenml.client import Client

    name = info.tags.get("zenml.pipeline_run")
    return Client().get_pipeline_run(name) if name else None


def _steps_section(run: Any) -> Section:
    items = [("pipeline run", f"{run.name} ({run.status})")]
    for name, step in run.steps.items():
        items.append((f"step {name}", str(step.status)))
    return "ZenML", items


def _validation_section(run: Any) -> Section:
    step = run.steps.get("data_validator")
    if step is None or "validation_report" not in step.outputs:
        return "Validation", [("report", "not found in the pipeline run")]
    report = step.outputs["validation_report"][0].load()
    failed = [o for o in report.outcomes if not o.success]
    items = [("suite", report.suite), ("passed", str(report.success)),
             ("expectations", f"{report.evaluated - len(failed)}/{report.evaluated} met"),
             ("artifact", str(step.outputs["validation_report"][0].id))]
    items += [(f"{o.severity} {o.check}", f"{o.expectation}({o.column}): {o.unexpected_count} row(s)") for o in failed]
    return "Validation", items


def _config_section(run: Any) -> Section:
    step = run.steps.get("model_trainer")
    config = step.config.parameters.get("config") if step is not None else None
    return "Training config", [("model_trainer config", json.dumps(config, sort_keys=True) if config else "not found")]


def _recorded_lineage(registry: ModelRegistry, version: VersionInfo) -> dict[str, Any] | None:
    try:
        return json.loads(registry.run_text(version, LINEAGE_ARTIFACT))
    except RegistryError:
        return None


def _recorded_sections(doc: dict[str, Any]) -> list[Section]:
    zen, val = doc["zenml"], doc["validation"]
    steps = [("pipeline run", f"{zen['pipeline_run']} (id {zen['pipeline_run_id']})")]
    steps += [(f"step {name}", f"{status} (at registration)") for name, status in zen["steps_at_registration"].items()]
    items = [("suite", val["suite"]), ("passed", str(val["passed"])),
             ("expectations", f"{val['met']}/{val['evaluated']} met")]
    items += [(f"{f['severity']} {f['check']}", f"{f['expectation']}({f['column']}): {f['rows']} row(s)")
              for f in val["failed"]]
    config = ("model_trainer config", json.dumps(doc["training_config"], sort_keys=True))
    return [("ZenML", steps), ("Validation", items), ("Training config", [config])]


def _changes_section(registry: ModelRegistry, info: VersionInfo, config: dict[str, Any]) -> Section | None:
    """What differs between ``info`` and the champion; for the champion, its predecessor in the history."""
    against = registry.champion()
    title = f"Changes against champion v{against.version}" if against else ""
    if against is not None and against.version == info.version:
        chain = registry.champion_chain()
        if len(chain) < 2:
            return None
        against, title = registry.version(chain[-2]), f"Changes since v{chain[-2]}, the champion before it"
    if against is None:
        return None
    rows = differences(against.tags, registry.training_config(against), info.tags, config)
    return title, [(what, f"{old} -> {new}") for what, old, new in rows] or [("-", "nothing recorded differs")]


def _event_line(event: dict[str, str]) -> str:
    override = f" over the gate's verdict {event['override']}" if event.get("override") else ""
    return f"{event['action']} v{event['version']} by {event['by']}{override}: {event['reason']}"


def lineage(registry: ModelRegistry, version: str) -> list[Section]:
    """Titled sections of (key, value) lines for ``version`` of ``registry``'s model."""
    info = registry.version(version)
    run = registry.client.get_run(info.run_id)
    tags = info.tags
    sections: list[Section] = [
        (f"Model {registry.name} version {info.version}",
         [("stage", info.stage), ("aliases", ", ".join(info.aliases) or "-"),
          ("gate", f"{tags.get('gate.verdict', '-')}: {tags.get('gate.reasons', '-')}"),
          ("mean mMP@5 / R@1", f"{tags.get('metric.mean_mmp_at_5', '-')} / {tags.get('metric.mean_r_at_1', '-')}")]),
        ("MLflow", [("run", f"{info.run_id} ({run.info.status})"), ("experiment", run.info.experiment_id),
                    ("training curves in run", tags.get("training.mlflow_run_id") or "-"),
                    ("model uri", f"models:/{registry.name}/{info.version}")]),
        ("Data", [("benchmark", tags.get("data.benchmark", "-")), ("DVC md5", tags.get("data.dvc_md5", "-")),
                  ("git revision of data.dvc", tags.get("data.dvc_file_git_rev", "-") or "-")]),
        ("Code", [("git commit", tags.get("code.git_commit", "-")), ("dirty tree", tags.get("code.git_dirty", "-"))]),
    ]
    teachers = json.loads(tags.get("training.teachers", "{}") or "{}")
    if teachers:
        sections.append(("Frozen teachers", [(name, ", ".join(f"{k}={v}" for k, v in src.items()))
                                             for name, src in teachers.items()]))
    recorded = _recorded_lineage(registry, info)
    if recorded is not None:  # written at registration: no need to start ZenML
        sections += _recorded_sections(recorded)
    elif (zen := _zenml_run(info)) is None:
        sections.append(("ZenML", [("pipeline run", "not recorded (registered outside the pipeline)")]))
    else:  # versions registered before the lineage document existed
        sections += [_steps_section(zen), _validation_section(zen), _config_section(zen)]
    if (changes := _changes_section(registry, info, (recorded or {}).get("training_config") or {})) is not None:
        sections.append(changes)
    events = [e for e in registry.history() if info.version in (e["version"], e.get("previous"))]
    sections.append(("Promotions", [(e["at"], _event_line(e)) for e in events] or [("-", "never promoted")]))
    return sections

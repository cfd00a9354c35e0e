"""The embedded default stack: local orchestrator and artifact store, MLflow tracking + registry on SQLite.

Created when missing and activated only when the user is still on ZenML's bare 'default' stack, so a
configured cluster stack is never replaced behind the user's back.
"""

from __future__ import annotations

LOCAL_STACK = "udon-local"
TRACKER = "udon-mlflow"
REGISTRY = "udon-mlflow-registry"


def ensure_local_stack() -> str:
    """Create the embedded stack if needed, activate it over 'default', and return the active stack's name."""
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    client = Client()
    existing = {c.name for c in client.list_stack_components(type=T.EXPERIMENT_TRACKER, size=100).items}
    if TRACKER not in existing:
        # why: no tracking_uri -> ZenML keeps MLflow's SQLite DB and artifacts inside the local artifact store.
        client.create_stack_component(name=TRACKER, flavor="mlflow", component_type=T.EXPERIMENT_TRACKER, configuration={})
    registries = {c.name for c in client.list_stack_components(type=T.MODEL_REGISTRY, size=100).items}
    if REGISTRY not in registries:
        client.create_stack_component(name=REGISTRY, flavor="mlflow", component_type=T.MODEL_REGISTRY, configuration={})
    if LOCAL_STACK not in {s.name for s in client.list_stacks(size=100).items}:
        client.create_stack(
            name=LOCAL_STACK,
            components={T.ORCHESTRATOR: "default", T.ARTIFACT_STORE: "default", T.EXPERIMENT_TRACKER: TRACKER,
                        T.MODEL_REGISTRY: REGISTRY},
        )
    if client.active_stack_model.name == "default":
        client.activate_stack(LOCAL_STACK)
    _no_analytics_in_our_config()  # the config exists now
    return client.active_stack_model.name


def _no_analytics_in_our_config() -> None:
    """Write ``analytics_opt_in: false`` into the ZenML config this project keeps under $UDON_HOME, so that
    `zenml ...` commands run by hand against it (without our environment) report nothing either. A user's
    own global ZenML configuration (UDON_HOME unset) is left alone.

    why the file: with ZENML_ANALYTICS_OPT_IN=false in the environment ZenML's settings object already reads
    False and never writes the value back.
    """
    import yaml

    path = _our_zenml_config()
    if path is None:
        return
    doc = yaml.safe_load(path.read_text()) or {}
    if isinstance(doc, dict) and doc.get("analytics_opt_in") is not False:
        doc["analytics_opt_in"] = False
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def tracking_uri() -> str | None:
    """The active stack's MLflow tracking URI, without starting ZenML when it can be avoided.

    why: `udon models` only reads MLflow, and starting ZenML (its store and stack) takes most of the time of
    such a command. The URI is remembered in $UDON_HOME/stack.json together with the active stack it
    belongs to (ZenML's own config file says which one is active), and resolved again through ZenML when
    that stack is no longer the active one, or a ZenML repository (.zen) might choose another stack.
    """
    import json

    from pipelines.run_records import udon_home

    remembered = udon_home() / "stack.json"
    active = _active_stack_id()
    if active and remembered.is_file():
        doc = json.loads(remembered.read_text())
        if doc.get("stack_id") == active:
            return doc.get("tracking_uri")
    from zenml.client import Client

    from integrations.mlflow_tracking import mlflow_tracking_uri

    ensure_local_stack()
    uri = mlflow_tracking_uri()
    remembered.parent.mkdir(parents=True, exist_ok=True)
    remembered.write_text(json.dumps({"stack_id": str(Client().active_stack_model.id), "tracking_uri": uri}) + "\n")
    return uri


def registry_uri() -> str:
    """The tracking URI of the active stack's MLflow registry (``tracking_uri``); a StackError when the stack has
    no MLflow experiment tracker, so no registry to resolve a ``models:/`` URI or a registered model in."""
    from udon_core.errors import StackError

    uri = tracking_uri()
    if uri is None:
        raise StackError("the active ZenML stack has no MLflow experiment tracker, so no model registry: activate "
                         f"one that has (`zenml stack set {LOCAL_STACK}`), or give an exported model folder")
    return uri


def _our_zenml_config():
    """ZenML's global config file when it is the one this project keeps under $UDON_HOME, else None."""
    import os
    from pathlib import Path

    home, config = os.environ.get("UDON_HOME"), os.environ.get("ZENML_CONFIG_PATH", "")
    path = Path(config) / "config.yaml"
    return path if home and config.startswith(home) and path.is_file() else None


def _active_stack_id() -> str | None:
    """The active stack named in the ZenML config under $UDON_HOME; None when another config may decide."""
    from pathlib import Path

    import yaml

    path = _our_zenml_config()
    here = Path.cwd().resolve()
    if path is None or any((d / ".zen").exists() for d in (here, *here.parents)):
        return None
    doc = yaml.safe_load(path.read_text()) or {}
    return str(doc["active_stack_id"]) if isinstance(doc, dict) and doc.get("active_stack_id") else None


def experiment_tracker_name() -> str | None:
    """The active stack's experiment tracker, which the train and register steps log to."""
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    return tracker.name if tracker else None


def cluster_route() -> tuple[str, str | None]:
    """The active stack's orchestrator flavor and step operator name: what decides how a run reaches the cluster."""
    from zenml.client import Client
    from zenml.enums import StackComponentType as T

    components = Client().active_stack_model.components
    (orchestrator,) = components[T.ORCHESTRATOR]
    operators = components.get(T.STEP_OPERATOR) or []
    return orchestrator.flavor_name, operators[0].name if operators else None

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

    _no_analytics_in_our_config()
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
    return client.active_stack_model.name


def _no_analytics_in_our_config() -> None:
    """Write ``analytics_opt_in: false`` into the ZenML config this project keeps under $UDON_HOME, so that
    `zenml ...` commands run by hand against it (README) report nothing either. A user's own global ZenML
    configuration (UDON_HOME unset) is left alone."""
    import os

    from zenml.config.global_config import GlobalConfiguration

    home, config = os.environ.get("UDON_HOME"), os.environ.get("ZENML_CONFIG_PATH", "")
    if home and config.startswith(home):
        settings = GlobalConfiguration()
        if settings.analytics_opt_in:
            settings.analytics_opt_in = False


def experiment_tracker_name() -> str | None:
    """The active stack's experiment tracker, which the train and register steps log to."""
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    return tracker.name if tracker else None

"""Test isolation: every tool that would write to the home directory is pointed at a temporary home.

These variables must be set before zenml, mlflow, dvc or matplotlib are first imported (their global
configurations are singletons read at import time), which is why this happens at module import.
"""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="udon-tests-")
os.environ.update(
    {
        "ZENML_CONFIG_PATH": os.path.join(_HOME, "zenml"),
        "ZENML_REPOSITORY_PATH": os.path.join(_HOME, "zenml-repo"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_LOGGING_VERBOSITY": "WARN",
        "ZENML_LOGGING_COLORS_DISABLED": "true",
        "ZENML_ENABLE_RICH_TRACEBACK": "false",
        "ZENML_DISABLE_INTERACTIVE_INPUT": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": os.path.join(_HOME, "dvc-site"),
        "DVC_GLOBAL_CONFIG_DIR": os.path.join(_HOME, "dvc-global"),
        "MPLCONFIGDIR": os.path.join(_HOME, "mpl"),
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": os.path.join(_HOME, "hf"),
        "TORCH_HOME": os.path.join(_HOME, "torch"),
        "XDG_CACHE_HOME": os.path.join(_HOME, "cache"),
        "XDG_CONFIG_HOME": os.path.join(_HOME, "config"),
        "UDON_HOME": os.path.join(_HOME, "udon"),
    }
)
os.makedirs(os.environ["ZENML_REPOSITORY_PATH"], exist_ok=True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def test_home() -> str:
    """The temporary home every tool writes to during the test session."""
    return _HOME

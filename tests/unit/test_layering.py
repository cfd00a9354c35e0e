"""The dependency direction: pipelines -> steps -> udon_core, and no side effects at import."""

from __future__ import annotations

import subprocess
import sys

ORCHESTRATION = ("zenml", "mlflow", "dvc", "great_expectations", "kubernetes")


def test_udon_core_imports_no_orchestration_library():
    code = (
        "import importlib, pkgutil, sys, udon_core\n"
        "for m in pkgutil.iter_modules(udon_core.__path__):\n"
        "    importlib.import_module('udon_core.' + m.name)\n"
        f"bad = sorted({{n.split('.')[0] for n in sys.modules}} & set({ORCHESTRATION!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"udon_core pulled in {out}"


def test_steps_never_import_pipelines():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2] / "steps"
    offenders = [p.name for p in root.glob("*.py") if "from pipelines" in p.read_text() or "import pipelines" in p.read_text()]
    assert offenders == []

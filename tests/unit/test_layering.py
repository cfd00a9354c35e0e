"""The dependency direction and no import cycles, read from what the compiled modules actually import.

Every import statement of every project module, at module level, in a function or under TYPE_CHECKING,
is an IMPORT_NAME instruction in its code object; the modules are found and compiled by the import system
(``pkgutil.walk_packages`` and each module's loader), so nothing here searches source text.
"""

from __future__ import annotations

import dis
import importlib.util
import pkgutil
import subprocess
import sys
from types import CodeType

import pytest

PACKAGES = ("udon_core", "integrations", "steps", "pipelines")
ORCHESTRATION = ("zenml", "mlflow", "dvc", "great_expectations", "kubernetes", "kubeflow", "kfp")
BASE = "udon_core (base)"  # errors, progress, device, overrides, digests: used by every part of the library
# What each part may import besides itself: pipelines -> steps -> integrations -> udon_core, and inside the
# library data -> model -> methods / evaluation -> training, registry on evaluation.
ALLOWED = {
    BASE: set(),
    "udon_core.data": {BASE},
    "udon_core.model": {BASE, "udon_core.data"},
    "udon_core.evaluation": {BASE, "udon_core.data", "udon_core.model"},
    "udon_core.methods": {BASE, "udon_core.data", "udon_core.model"},
    "udon_core.training": {BASE, "udon_core.data", "udon_core.model", "udon_core.methods", "udon_core.evaluation"},
    "udon_core.registry": {BASE, "udon_core.data", "udon_core.evaluation"},
    "udon_core.train": {"udon_core.training"},
}
LIBRARY = set(ALLOWED)
ALLOWED["integrations"] = LIBRARY
ALLOWED["steps"] = LIBRARY | {"integrations"}
ALLOWED["pipelines"] = LIBRARY | {"integrations", "steps"}


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.util.find_spec(package).submodule_search_locations
        names += [m.name for m in pkgutil.walk_packages(path, package + ".") if not m.name.endswith("__main__")]
    return names


def _code_objects(code: CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def _imports(name: str, known: set[str]) -> set[str]:
    """Every module ``name`` imports (absolute names); ``from package import module`` counts the module."""
    spec = importlib.util.find_spec(name)
    code = spec.loader.get_code(name)
    package = name if spec.submodule_search_locations else name.rpartition(".")[0]
    found = set()
    for obj in _code_objects(code):
        instructions = list(dis.get_instructions(obj))
        for i, ins in enumerate(instructions):
            if ins.opname != "IMPORT_NAME":
                continue
            level, fromlist = instructions[i - 2].argval, instructions[i - 1].argval
            base = package.rsplit(".", level - 1)[0] if level > 1 else package
            target = ins.argval if not level else ".".join(p for p in (base, ins.argval) if p)
            found.add(target)
            for item in fromlist or ():
                if f"{target}.{item}" in known:
                    found.add(f"{target}.{item}")
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, known) for m in modules}


def _part(module: str) -> str:
    head, _, rest = module.partition(".")
    if head != "udon_core":
        return head
    sub = "udon_core." + rest.split(".")[0] if rest else "udon_core"
    return sub if sub in ALLOWED else BASE


def test_every_project_module_is_seen(graph):
    assert {"udon_core.methods.unic", "udon_core.training.loop", "integrations.model_uri", "steps.model_trainer",
            "pipelines.cluster.manifests", "pipelines.cli.registry"} <= set(graph)


def test_each_part_imports_only_the_parts_below_it(graph):
    project = set(graph)
    bad = [f"{m} imports {t}" for m, targets in graph.items() for t in sorted(targets)
           if t in project and _part(t) != _part(m) and _part(t) not in ALLOWED[_part(m)]]
    assert bad == []


def test_the_library_never_imports_an_orchestration_tool(graph):
    bad = [f"{m} imports {t}" for m, targets in graph.items() if m.startswith("udon_core")
           for t in sorted(targets) if t.split(".")[0] in ORCHESTRATION]
    assert bad == []


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each import cycle among the graph's own modules, as 'a -> b -> a'."""
    edges = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def test_the_checks_see_a_cycle_and_a_wrong_direction(tmp_path, monkeypatch):
    pkg = tmp_path / "udon_core_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from udon_core_probe import b\n")
    (pkg / "b.py").write_text("from . import a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import zenml\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    known = {"udon_core_probe", "udon_core_probe.a", "udon_core_probe.b"}
    assert _imports("udon_core_probe.a", known) == {"udon_core_probe", "udon_core_probe.b"}
    assert _imports("udon_core_probe.b", known) == {"udon_core_probe", "udon_core_probe.a", "typing", "zenml"}
    probe = {m: _imports(m, known) for m in sorted(known)}
    assert _cycles(probe) == ["udon_core_probe.a -> udon_core_probe.b -> udon_core_probe.a"]


def test_importing_the_library_loads_no_orchestration_tool():
    code = (
        "import importlib, pkgutil, sys, udon_core\n"
        "for m in pkgutil.walk_packages(udon_core.__path__, 'udon_core.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted({{n.split('.')[0] for n in sys.modules}} & set({ORCHESTRATION!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"udon_core pulled in {out}"

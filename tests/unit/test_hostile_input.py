"""The 65 hostile benchmarks of tests/hostile.py, one test per class of the README's reliability table.

Each variant must be answered by a finding of the expected check or one sentence naming the field, with no
file opened outside the data folder and no traceback; decoding must stay within the loader's memory budget.
The fast unit tests of test_benchmark.py, test_uned_reader.py, test_validation.py and test_images.py pin each
failure of the first campaign; these run the whole set as a user would meet it (`udon data validate`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile import KINDS, VARIANTS, as_the_pipeline, build, by_kind, judge

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_set_has_65_variants_in_five_classes():
    assert len(VARIANTS) == 65 and len({v.name for v in VARIANTS}) == 65
    assert {v.kind for v in VARIANTS} == set(KINDS)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "memory"])
def test_every_variant_of_the_class_holds(tmp_path, kind):
    verdicts = {v.name: judge(v, tmp_path / str(i), as_the_pipeline) for i, v in enumerate(by_kind(kind))}
    failed = {name: v.why for name, v in verdicts.items() if not v.held}
    assert not failed, json.dumps(failed, indent=1)


_VALIDATE = r"""
import json, sys
from pathlib import Path
from tests.peak_rss import peak_above
from integrations.expectations import validate_folder
validate_folder(Path(sys.argv[1]))  # imports, GE's context, the clean part of the folder: not what is measured
out = {}
for root in sys.argv[2:]:
    try:
        found = {}
        peak = peak_above(lambda: found.update(report=validate_folder(Path(root))))
        report = found["report"]
        errors = [r.value for o in report.critical_failures for r in o.rows]
        out[root] = {"peak": peak, "passed": report.success, "checks": [o.check for o in report.critical_failures],
                     "errors": errors}
    except BaseException as err:
        out[root] = {"crash": f"{type(err).__name__}: {err}"}
print(json.dumps(out))
"""


def test_decoding_the_memory_variants_stays_within_the_budget(tmp_path):
    from tests.byob import write_benchmark
    from udon_core.data.decode_budget import DECODE_BUDGET_BYTES

    roots = {v.name: build(v, tmp_path / str(i))[0] for i, v in enumerate(by_kind("memory"))}
    clean = write_benchmark(tmp_path / "clean")
    done = subprocess.run([sys.executable, "-c", _VALIDATE, str(clean), *map(str, roots.values())], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = {name: json.loads(done.stdout.splitlines()[-1])[str(root)] for name, root in roots.items()}
    assert not [name for name, f in found.items() if "crash" in f], found
    # the 16-bit scan decodes within the budget (four of them one after another); RGBA of 9000x9000 needs more
    # than the budget and is refused by a sentence; the 1-bit 20000x20000 is PIL's own decompression bomb
    assert found["16-bit PNG 12000x12000"]["passed"] and found["four 16-bit PNGs 12000x12000"]["passed"]
    assert found["8-bit PNG 12000x12000"]["passed"]
    assert found["RGBA PNG 9000x9000"]["checks"] == ["image_decodes"]
    assert found["RGBA PNG 9000x9000"]["errors"][0].startswith("refused: decoding it (9000x9000 RGBA) needs about")
    assert "decompression bomb" in found["1-bit PNG 20000x20000 (PIL's bomb limit)"]["errors"][0]
    # measured by the kernel, above the process before the validation: the budget and 5% for the rest
    assert max(f["peak"] for f in found.values()) <= 1.05 * DECODE_BUDGET_BYTES, found

"""The UnED baselines and the per-domain specialist: UDON's student head trained alone.

What each changes from the UDON defaults (research/udon.md section 4, "Differences from the UnED baseline
configs"): one 64-d projection trained by NormFace CE only, for 7 epochs (7 x 22,118 steps), with the
projection in the backbone's optimiser group (``params_early_train = ['output_projection']``), domains
sampled round robin (RR) or by dataset size (DS). UJC* use one joint classifier over all domains' classes
(label offsets). A specialist is the baseline recipe on one domain (``domains: [name]``, one run per domain):
the "Specialist+Oracle" reference.
"""

from __future__ import annotations

from typing import Any

from udon_core.errors import InvalidValueError
from udon_core.methods.base import MethodSpec, TrainSettings
from udon_core.methods.udon import NO_TEACHERS, build_udon_task

_UNED_BASELINE: dict[str, Any] = {"steps": 154_826, "student_head_group": "backbone", "loss": NO_TEACHERS}
_RR, _DS = {"strategy": "round_robin"}, {"strategy": "dataset_size"}


def _one_domain(cfg: TrainSettings) -> None:
    if cfg.domains is None or len(cfg.domains) != 1:
        raise InvalidValueError("method 'specialist' trains one model per domain: set domains to exactly one "
                                "domain, e.g. domains: [inshop], and run once per domain")


METHODS = (
    MethodSpec("uscrr", build=build_udon_task, preset={**_UNED_BASELINE, "sampler": _RR}),
    MethodSpec("uscds", build=build_udon_task, preset={**_UNED_BASELINE, "sampler": _DS}),
    MethodSpec("ujcrr", build=build_udon_task, preset={**_UNED_BASELINE, "student_classifier": "joint", "sampler": _RR}),
    MethodSpec("ujcds", build=build_udon_task, preset={**_UNED_BASELINE, "student_classifier": "joint", "sampler": _DS}),
    MethodSpec("specialist", build=build_udon_task, preset={**_UNED_BASELINE, "sampler": _RR}, check=_one_domain),
)

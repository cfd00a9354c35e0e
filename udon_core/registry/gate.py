"""The promotion gate: does a newly trained model replace the champion? A pure policy over metric documents.

Metric documents are ``RetrievalReport.to_dict()`` (``per_domain[d][r_at_1 | mmp_at_5]``, ``mean_mmp_at_5``).
Decisions:

- ``reject``: a domain is below its absolute floor. The model stays registered but is never a candidate.
- ``hold``: floors pass but the comparison with the champion does not (too small a gain on mean mMP@5, a
  domain regressed by more than the tolerance, a champion domain missing), or it passes and the policy
  asks for a human review (``auto_promote: false``). The model waits as the challenger.
- ``promote``: everything passes and ``auto_promote`` is on. The first model (no champion) is judged on
  the floors alone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from udon_core.errors import InvalidValueError

METRICS = ("mmp_at_5", "r_at_1")
EPS = 1e-9  # why: "exactly at the threshold passes" must survive float sums (0.1 + 0.2 != 0.3)
Decision = Literal["promote", "hold", "reject"]


class DomainFloor(BaseModel):
    """Absolute minimums for one domain; unset values fall back to the policy's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mmp_at_5: float | None = Field(default=None, ge=0, le=1)
    r_at_1: float | None = Field(default=None, ge=0, le=1)


class GatePolicy(BaseModel):
    """What a challenger must show. Floors default to 0 so that a first demo model can be promoted; set
    real floors per domain for production (e.g. the champion's figures minus a margin)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_mmp_at_5: float = Field(default=0.0, ge=0, le=1, description="floor for every domain's mMP@5")
    min_r_at_1: float = Field(default=0.0, ge=0, le=1, description="floor for every domain's R@1")
    floors: dict[str, DomainFloor] = Field(default_factory=dict, description="per-domain floors (override)")
    min_improvement: float = Field(
        default=0.0, ge=-1, le=1, description="the challenger's mean mMP@5 must be >= champion's + this"
    )
    max_domain_regression: float = Field(
        default=0.02, ge=0, le=1, description="no domain's mMP@5 or R@1 may drop by more than this"
    )
    auto_promote: bool = Field(default=True, description="promote when every check passes; False: hold for review")

    def floor(self, domain: str, metric: str) -> float:
        """The floor of ``metric`` for ``domain``."""
        override = getattr(self.floors.get(domain, DomainFloor()), metric)
        return override if override is not None else getattr(self, f"min_{metric}")


class Check(BaseModel):
    """One rule applied to one number: passed when ``value`` meets ``threshold`` (see ``rule``)."""

    model_config = ConfigDict(frozen=True)

    rule: Literal["floor", "improvement", "regression", "coverage"]
    subject: str  # e.g. "emoji mMP@5", "mean mMP@5"
    passed: bool
    value: float | None = None
    threshold: float | None = None

    def describe(self) -> str:
        """One line a reviewer can read, e.g. ``floor: emoji mMP@5 0.412 >= 0.400 (pass)``."""
        status = "pass" if self.passed else "FAIL"
        if self.value is None or self.threshold is None:
            return f"{self.rule}: {self.subject} ({status})"
        fmt = ".3f" if self.rule == "floor" else "+.3f"  # floors are levels, the others are changes
        return f"{self.rule}: {self.subject} {self.value:{fmt}} >= {self.threshold:{fmt}} ({status})"


class GateVerdict(BaseModel):
    """The decision with every check behind it."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    checks: list[Check]
    compared_with: str | None = None  # the champion's version, when there was one
    note: str = ""

    @property
    def reasons(self) -> list[str]:
        """The failed checks (or, with none, why the decision was taken), one line each."""
        failed = [c.describe() for c in self.checks if not c.passed]
        return failed or [self.note or "every check passed"]


_LABEL = {"mmp_at_5": "mMP@5", "r_at_1": "R@1"}


def _per_domain(doc: dict[str, Any], where: str) -> dict[str, dict[str, float]]:
    try:
        return {d: {m: float(v[m]) for m in METRICS} for d, v in doc["per_domain"].items()}
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidValueError(f"{where} metrics need per_domain.<domain>.{{mmp_at_5, r_at_1}}: {err}") from err


def _mean(per: dict[str, dict[str, float]], metric: str) -> float:
    return sum(v[metric] for v in per.values()) / len(per)


def _floors(per: dict[str, dict[str, float]], policy: GatePolicy) -> list[Check]:
    return [Check(rule="floor", subject=f"{d} {_LABEL[m]}", passed=v[m] >= policy.floor(d, m) - EPS, value=v[m],
                  threshold=policy.floor(d, m))
            for d, v in per.items() for m in METRICS]


def _against_champion(per: dict[str, dict[str, float]], champ: dict[str, dict[str, float]],
                      policy: GatePolicy) -> list[Check]:
    common = [d for d in champ if d in per]
    checks = []
    if common:
        gain = _mean({d: per[d] for d in common}, "mmp_at_5") - _mean({d: champ[d] for d in common}, "mmp_at_5")
        checks.append(Check(rule="improvement", subject="mean mMP@5 over the champion's domains",
                            passed=gain >= policy.min_improvement - EPS, value=gain, threshold=policy.min_improvement))
    checks += [Check(rule="coverage", subject=f"{d} (champion domain) missing", passed=False)
               for d in champ if d not in per]
    for d in common:
        for m in METRICS:
            delta = per[d][m] - champ[d][m]
            checks.append(Check(rule="regression", subject=f"{d} {_LABEL[m]} change", value=delta,
                                passed=delta >= -policy.max_domain_regression - EPS,
                                threshold=-policy.max_domain_regression))
    return checks


def judge(challenger: dict[str, Any], champion: dict[str, Any] | None, policy: GatePolicy,
          champion_version: str | None = None) -> GateVerdict:
    """The gate's decision for ``challenger`` against ``champion`` (None: no champion yet)."""
    per = _per_domain(challenger, "challenger")
    if not per:
        raise InvalidValueError("challenger metrics have no domains")
    floors = _floors(per, policy)
    if not all(c.passed for c in floors):
        return GateVerdict(decision="reject", checks=floors, compared_with=champion_version)
    if champion is None:
        decision: Decision = "promote" if policy.auto_promote else "hold"
        note = "first model: judged on the floors alone" + ("" if policy.auto_promote else "; review required")
        return GateVerdict(decision=decision, checks=floors, note=note)
    checks = floors + _against_champion(per, _per_domain(champion, "champion"), policy)
    if not all(c.passed for c in checks):
        return GateVerdict(decision="hold", checks=checks, compared_with=champion_version)
    decision = "promote" if policy.auto_promote else "hold"
    note = "every check passed" + ("" if policy.auto_promote else "; auto_promote is off: review required")
    return GateVerdict(decision=decision, checks=checks, compared_with=champion_version, note=note)

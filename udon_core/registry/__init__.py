"""Promotion decisions: the gate that judges a challenger against the champion, the review a person reads
before promoting a model, and what makes two versions comparable.
"""

from __future__ import annotations

from udon_core.registry.comparability import benchmark_digest, benchmark_protocol, differences
from udon_core.registry.gate import DomainFloor, GatePolicy, judge
from udon_core.registry.review import Candidate, changes, promotion_review

__all__ = [
    "benchmark_digest", "benchmark_protocol", "Candidate", "changes", "differences", "DomainFloor", "GatePolicy",
    "judge", "promotion_review",
]

"""Promotion decisions: the gate that judges a challenger against the champion, and the review a person
reads before promoting a model.
"""

from __future__ import annotations

from udon_core.registry.gate import DomainFloor, GatePolicy, judge
from udon_core.registry.review import Candidate, promotion_review

__all__ = [
    "Candidate", "DomainFloor", "GatePolicy", "judge", "promotion_review",
]

"""Ordering of S3 event notifications for one key.

S3 delivers events at least once and in no particular order; the `sequencer` of two events on the
same key tells which happened later. AWS's rule: left-pad the shorter value with zeros, then compare
as hexadecimal strings. Sequencers of different keys cannot be compared.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"^[0-9A-Fa-f]{1,64}$")


def is_valid_sequencer(value: str) -> bool:
    return bool(_HEX.match(value or ""))


def _normalise(a: str, b: str) -> tuple[str, str]:
    width = max(len(a), len(b))
    return a.upper().rjust(width, "0"), b.upper().rjust(width, "0")


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as event `a` happened before, with, or after event `b` (same key)."""
    if not (is_valid_sequencer(a) and is_valid_sequencer(b)):
        raise ValueError("a sequencer is a non-empty hexadecimal string")
    left, right = _normalise(a, b)
    return (left > right) - (left < right)


def sequencer_is_newer(candidate: str, stored: str) -> bool:
    """True when an event with `candidate` should be applied over the last applied `stored`.

    Nothing stored yet (or no usable candidate) is not evidence of staleness: apply it and let
    the idempotent services decide.
    """
    if not stored or not is_valid_sequencer(stored) or not is_valid_sequencer(candidate):
        return True
    return compare_sequencers(candidate, stored) > 0

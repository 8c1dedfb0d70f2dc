"""Stable seeds from a run seed and a call's identity: the same parts give the same number in every process
(unlike hash()). Every seed in the project comes from here; nothing else hashes parts into a seed.

One hash (blake2b over the parts joined by '|'), two widths: `seed_for` gives 31 bits (random.Random, torch and
model-call seeds), `unit_for` 64 bits as a uniform number in [0, 1) (split assignment, sampling weights). The
engine's seeds are recorded with every run and its llm_calls, and replay and reruns reproduce them, so this
algorithm is fixed: tests/test_seeds.py pins its values.
"""

from __future__ import annotations

import hashlib

__all__ = ["seed_for", "unit_for"]


def _digest(parts: tuple[object, ...], size: int) -> int:
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=size).digest(), "big")


def seed_for(*parts: object) -> int:
    """A seed in [0, 2**31) for these parts."""
    return _digest(parts, 4) & 0x7FFFFFFF


def unit_for(*parts: object) -> float:
    """A uniform number in [0, 1) for these parts."""
    return _digest(parts, 8) / 2**64

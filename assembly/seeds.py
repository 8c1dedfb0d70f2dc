"""Stable seeds from a run seed and a call's identity: the same parts give the same integer in every process
(unlike hash()). Every seed in the project comes from here; nothing else hashes parts into a seed.

Three functions, because each one's values are already recorded and changing an algorithm would silently change
what a recorded seed reproduces:

* `seed_for` — the engine (full graph and distilled runs): the seeds of model calls, ballots, option orders, the floor
  shuffle and redraws, stored with every run and its llm_calls, which replay and reruns reproduce.
* `stable_seed` — the fidelity evaluation (`assembly eval survey`): which jurors each panel seats, their personas and
  option orders; the benchmark numbers in docs/fidelity.md were measured with it.
* `stable_int` — fine-tuning data (`assembly finetune prepare`): 64 bits, so `stable_int(...) / 2**64` is a uniform
  number in [0, 1) (split assignment, sampling weights), and prepared datasets' split.json files depend on it.

tests/test_seeds.py pins values of all three.
"""

from __future__ import annotations

import hashlib

__all__ = ["seed_for", "stable_int", "stable_seed", "stable_unit"]


def seed_for(*parts: object) -> int:
    """The engine's seeds: 31 bits of blake2b over the parts joined by '|' (recorded runs depend on it)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def stable_seed(*parts: object) -> int:
    """The fidelity evaluation's seeds: 31 bits of sha256 over the parts joined by '\\x1f'."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def stable_int(*parts: object) -> int:
    """Fine-tuning's 64-bit integers: blake2b (8 bytes) over the parts joined by '\\x1f'."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stable_unit(*parts: object) -> float:
    """A uniform number in [0, 1) from `stable_int`."""
    return stable_int(*parts) / 2**64

"""Stratified random selection of a jury from a population frame.

Method
1. Targets. For each stratified attribute, seats per group by the largest-remainder (Hamilton) method on
   `size x population share`; ties go to the larger share, then to the canonical group order. A user quota
   replaces the targets of its attribute (groups it leaves out get 0 seats); an attribute given a quota is
   stratified even if `stratify` omits it.
2. Cells. Records are grouped into cells: the distinct combinations of the stratified attributes' groups.
3. Seats, one at a time. Each seat goes to a record drawn in proportion to its weight among the records whose
   cell keeps every remaining target satisfiable: each of its groups still has an open seat, and the seats left
   after it can still be filled by cells of the frame exactly (an integer feasibility problem, solved by
   scipy's HiGHS MILP; a feasible completion is kept and only re-solved when a draw leaves it). So every target
   is met exactly, and the attributes that are not stratified follow the frame conditional on the stratified
   ones, because whole records are drawn.
4. Jurors are shuffled (so a juror's number says nothing about when the quotas bound) and given personas.

For a single stratified attribute this is the same as drawing each stratum's target count by weight within it.
Everything random flows from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from juries.errors import JuryError
from juries.personas import Juror, render_persona
from juries.population import Population, load_population, pick_weighted


@dataclass(frozen=True)
class Draw:
    """One drawn jury: jurors, the seed and targets that produced it, and how closely it mirrors the frame."""

    jurors: list[Juror]
    seed: int
    stratify: list[str]
    targets: dict[str, dict[str, int]]
    representativeness: dict[str, float]  # 1 - TV(jury, population) for every attribute of the frame
    overall: float  # mean representativeness over the stratified attributes (1.0 when none is stratified)


def allocate_seats(shares: dict[str, float], size: int) -> dict[str, int]:
    """Largest-remainder seats for `size` in proportion to `shares` (dict order breaks exact ties)."""
    total = sum(shares.values())
    quotas = {g: size * s / total for g, s in shares.items()}
    seats = {g: int(np.floor(q)) for g, q in quotas.items()}
    order = list(shares)
    by_remainder = sorted(order, key=lambda g: (-(quotas[g] - seats[g]), -shares[g], order.index(g)))
    for group in by_remainder[: size - sum(seats.values())]:
        seats[group] += 1
    return seats


def measure_representativeness(population: Population, jurors: list[dict[str, str]]) -> dict[str, float]:
    """Per attribute, 1 - total variation distance between the jurors' composition and the frame's marginal."""
    scores = {}
    for attribute in population.attributes:
        frame = population.marginal(attribute)
        counts: dict[str, int] = {}
        for juror in jurors:
            counts[juror[attribute]] = counts.get(juror[attribute], 0) + 1
        groups = set(frame) | set(counts)
        n = len(jurors)
        tv = 0.5 * sum(abs(counts.get(g, 0) / n - frame.get(g, 0.0)) for g in groups) if n else 1.0
        scores[attribute] = 1.0 - tv
    return scores


def draw_jury(
    population: Population | str,
    size: int,
    stratify: list[str],
    quotas: dict[str, dict[str, int]] | None = None,
    seed: int = 0,
) -> Draw:
    """A stratified random jury of `size` jurors; same seed, same jury. See the module docstring for the method."""
    if isinstance(population, str):
        population = load_population(population)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise JuryError(f"jury size must be a positive integer, got {size!r}")
    size = int(size)
    quotas = quotas or {}
    attributes = list(dict.fromkeys([*stratify, *quotas]))
    for attribute in attributes:
        if attribute not in population.attributes:
            raise JuryError(
                f"unknown attribute {attribute!r} in stratify/quotas "
                f"(frame {population.name} has: {', '.join(population.attributes)})"
            )
    targets = {a: _quota_targets(population, a, quotas[a], size) if a in quotas else
               allocate_seats(population.marginal(a), size) for a in attributes}

    rng = np.random.default_rng(seed)
    indices = _fill_seats(population, attributes, targets, size, rng)
    rng.shuffle(indices)
    records = population.rows(indices)
    width = max(2, len(str(size)))
    persona_seeds = np.random.SeedSequence(seed).generate_state(size)
    jurors = [
        Juror(id=f"juror-{i + 1:0{width}d}", attributes=rec, persona=render_persona(rec, int(persona_seeds[i])))
        for i, rec in enumerate(records)
    ]
    scores = measure_representativeness(population, records)
    overall = float(np.mean([scores[a] for a in attributes])) if attributes else 1.0
    return Draw(jurors, seed, attributes, targets, scores, overall)


def _quota_targets(population: Population, attribute: str, quota: dict[str, int], size: int) -> dict[str, int]:
    """Validate a user quota for `attribute`; groups it omits get 0 seats."""
    groups = population.groups(attribute)
    for group, seats in quota.items():
        if group not in groups:
            raise JuryError(f"quota for {attribute!r}: unknown group {group!r} (groups: {', '.join(groups)})")
        if isinstance(seats, bool) or not isinstance(seats, (int, np.integer)) or seats < 0:
            raise JuryError(f"quota for {attribute!r}: seats for {group!r} must be a non-negative integer, got {seats!r}")
    if sum(quota.values()) != size:
        raise JuryError(f"quota for {attribute!r}: seats sum to {sum(quota.values())}, but the jury size is {size}")
    shares = population.marginal(attribute)
    for group, seats in quota.items():
        if seats and shares[group] <= 0:
            raise JuryError(f"quota for {attribute!r}: group {group!r} has no records with positive weight")
    return {g: int(quota.get(g, 0)) for g in groups}


class _Cells:
    """Records grouped by their combination of stratified groups, with the seat-feasibility problem over them."""

    def __init__(self, population: Population, attributes: list[str], targets: dict[str, dict[str, int]]):
        weights = population.weights
        live = np.flatnonzero(weights > 0)
        codes = np.stack([population.codes(a)[live] for a in attributes], axis=1)
        self.keys, of_record = np.unique(codes, axis=0, return_inverse=True)
        of_record = of_record.reshape(-1)
        order = np.argsort(of_record, kind="stable")
        bounds = np.searchsorted(of_record[order], np.arange(len(self.keys) + 1))
        self.members = [live[order[bounds[c] : bounds[c + 1]]] for c in range(len(self.keys))]
        self.weight = np.array([weights[m].sum() for m in self.members])
        # One equality row per (attribute, group): seats taken by cells of that group == seats still open.
        self.need = np.concatenate([np.array(list(targets[a].values()), dtype=float) for a in attributes])
        offsets = np.cumsum([0] + [len(targets[a]) for a in attributes])
        self.rows_of_cell = self.keys + offsets[:-1]  # (cells x attributes): each cell's constraint rows
        rows = self.rows_of_cell.T.reshape(-1)
        cols = np.tile(np.arange(len(self.keys)), len(attributes))
        self.matrix = csr_array((np.ones(len(rows)), (rows, cols)), shape=(len(self.need), len(self.keys)))

    def complete(self, need: np.ndarray) -> np.ndarray | None:
        """Seats per cell meeting `need` exactly, or None if the frame's cells cannot."""
        if need.min() < 0:
            return None
        seats = need.sum() / self.rows_of_cell.shape[1]  # each open seat is counted once per attribute
        result = milp(
            c=np.zeros(len(self.keys)),  # any completion will do: it only caches feasibility
            constraints=LinearConstraint(self.matrix, need, need),
            integrality=np.ones(len(self.keys)),
            bounds=Bounds(0, seats),
            options={"time_limit": 30.0},
        )
        if result.status == 0 and result.x is not None:
            return np.round(result.x).astype(np.int64)
        if result.status == 2:
            return None
        raise JuryError(f"seat allocation did not finish ({result.message})")


def _fill_seats(
    population: Population, attributes: list[str], targets: dict[str, dict[str, int]], size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Record indices for every seat (see the module docstring, step 3)."""
    if not attributes:
        return pick_weighted(population.weights, size, rng)
    cells = _Cells(population, attributes, targets)
    need = cells.need.copy()
    plan = cells.complete(need)
    if plan is None:
        described = "; ".join(f"{a}: {targets[a]}" for a in attributes)
        raise JuryError(f"targets cannot be met together by any records of frame {population.name}: {described}")
    chosen = []
    for _ in range(size):
        banned = np.zeros(len(cells.keys), dtype=bool)
        while True:
            open_ = (need[cells.rows_of_cell] > 0).all(axis=1) & ~banned
            if not open_.any():  # cannot happen while `plan` is a valid completion; guard the invariant
                raise JuryError(f"seat allocation failed for frame {population.name}")
            cell = int(pick_weighted(cells.weight * open_, 1, rng)[0])
            after = need.copy()
            after[cells.rows_of_cell[cell]] -= 1
            if plan[cell] > 0:
                plan[cell] -= 1
                break
            replan = cells.complete(after)
            if replan is not None:
                plan = replan
                break
            banned[cell] = True  # this cell would strand a later target; try another
        need = after
        members = cells.members[cell]
        chosen.append(members[pick_weighted(population.weights[members], 1, rng)[0]])
    return np.array(chosen, dtype=np.int64)

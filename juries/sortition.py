"""Stratified random selection of a jury from a population frame.

Method
1. Targets. For each stratified attribute, seats per group by the largest-remainder (Hamilton) method on
   `size x population share`; ties go to the larger share, then to the canonical group order. A user quota
   replaces the targets of its attribute (groups it leaves out get 0 seats); an attribute given a quota is
   stratified even if `stratify` omits it.
2. Cells. Records are grouped into cells: the distinct combinations of the stratified attributes' groups.
3. Seats, one at a time. Each seat goes to a record drawn in proportion to its weight among the records whose
   cell keeps every target reachable: each of its groups still has an open seat, and the seats left after it can
   still be filled exactly by cells of the frame. Whole records are drawn, so the attributes that are not
   stratified follow the frame conditional on the stratified ones.
   Whether the seats left can be filled is a small integer feasibility problem. A completion (seats per cell) is
   kept; a drawn cell inside it is accepted at once. Otherwise the completion is repaired (a few of its seats
   swapped out and refilled) or rebuilt by a randomized greedy pass that fills the scarcest group first, in the
   spirit of the LEGACY algorithm of Flanigan et al., "Fair algorithms for selecting citizens' assemblies",
   Nature 596 (2021); with at most 2,000 cells an exact MILP (scipy's HiGHS) backs the greedy pass up and proves
   infeasibility. For the last three seats the candidate cells are enumerated exactly. Every target is met
   exactly; the one approximation is that, with many crossed attributes, a cell whose completion the heuristics
   miss is passed over.
4. Jurors are shuffled (so a juror's number says nothing about when the quotas bound) and given personas.

For a single stratified attribute this is the same as drawing each stratum's target count by weight within it.
Everything random flows from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """Largest-remainder (Hamilton) seats for `size` in proportion to `shares`; equal remainders go to the larger
    share, then to the earlier group in `shares`."""
    total = sum(shares.values())
    # Rounded so that float noise (0.29 * 100 = 28.999...) cannot move a seat between exact ties.
    quotas = {g: round(size * s / total, 9) for g, s in shares.items()}
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
    stratify = [stratify] if isinstance(stratify, str) else list(stratify)
    attributes = list(dict.fromkeys([*stratify, *quotas]))
    for attribute in attributes:
        if attribute not in population.attributes:
            raise JuryError(
                f"unknown attribute {attribute!r} in stratify/quotas "
                f"(frame {population.name} has: {', '.join(population.attributes)})"
            )
    targets = {a: _quota_targets(population, a, quotas[a], size) if a in quotas else
               allocate_seats(population.marginal(a), size) for a in attributes}

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise JuryError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed) % 2**64)  # numpy seeds are non-negative; any int is accepted
    indices = _fill_seats(population, attributes, targets, size, rng)
    rng.shuffle(indices)
    records = population.rows(indices)
    width = max(2, len(str(size)))
    persona_seeds = np.random.SeedSequence(int(seed) % 2**64).generate_state(size)
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


_GREEDY_TRIES = 8
_EXACT_SEATS = 3  # the last seats are drawn among exactly the cells that can still complete the targets
_MILP_CELLS = 2_000  # beyond this HiGHS can take minutes to find or refute a completion
_MILP_SECONDS = 20.0


class _Cells:
    """Records grouped by their combination of stratified groups, with the seat-feasibility problem over them."""

    def __init__(self, population: Population, attributes: list[str], targets: dict[str, dict[str, int]]):
        weights = population.weights
        live = np.flatnonzero(weights > 0)
        sizes = [len(targets[a]) for a in attributes]
        if np.prod(sizes, dtype=float) > 2**62:
            raise JuryError(f"too many strata to cross: {' x '.join(map(str, sizes))} groups in {attributes}")
        # Cells are identified by a mixed-radix code, so a combination of groups can be looked up by search.
        self.radix = np.cumprod([1] + sizes[:-1]).astype(np.int64)
        codes = np.stack([population.codes(a)[live] for a in attributes], axis=1) @ self.radix
        self.sorted_codes, of_record = np.unique(codes, return_inverse=True)
        self.keys = (self.sorted_codes[:, None] // self.radix) % np.array(sizes)  # (cells x attributes)
        order = np.argsort(of_record, kind="stable")
        bounds = np.searchsorted(of_record[order], np.arange(len(self.keys) + 1))
        self.members = [live[order[bounds[c] : bounds[c + 1]]] for c in range(len(self.keys))]
        self.weight = np.bincount(of_record, weights=weights[live], minlength=len(self.keys))
        # Seats still open per (attribute, group), laid out attribute after attribute.
        self.need = np.concatenate([np.array(list(targets[a].values()), dtype=float) for a in attributes])
        self.offsets = np.cumsum([0] + sizes)
        self.rows_of_cell = self.keys + self.offsets[:-1]  # (cells x attributes): each cell's constraint rows

    def complete(self, need: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """Seats per cell meeting `need` exactly, or None when none is found.

        A few randomized greedy passes first (fast, and almost always enough); then, where the cells are few
        enough for it to be quick, an exact MILP, which also proves infeasibility.
        """
        if need.min() < 0:
            return None
        for _ in range(_GREEDY_TRIES):
            plan = self._greedy(need, rng)
            if plan is not None:
                return plan
        if len(self.keys) > _MILP_CELLS:
            return None
        return self._solve(need)

    def repair(self, plan: np.ndarray, cell: int, rng: np.random.Generator) -> np.ndarray | None:
        """A completion for the seats left after giving one to `cell`, found by changing only a few seats of `plan`.

        Take out seats of `plan` that between them hold each of `cell`'s groups, plus a few others, and refill the
        difference with the greedy pass: far cheaper than re-planning every remaining seat.
        """
        seats = np.repeat(np.arange(len(plan)), plan)
        wanted = self.rows_of_cell[cell]
        seat_rows = self.rows_of_cell[seats]
        out = np.zeros(len(seats), dtype=bool)
        for attribute, row in enumerate(wanted):
            if not (seat_rows[out, attribute] == row).any():  # `plan` fills every open group, so a match exists
                agree = (seat_rows == wanted).sum(axis=1) + rng.random(len(seats))  # prefer similar seats
                agree[out | (seat_rows[:, attribute] != row)] = -1
                out[int(np.argmax(agree))] = True
        extra = np.flatnonzero(~out)
        for more in (0, 2, 6, len(extra)):
            removed = out.copy()
            removed[rng.permutation(extra)[: min(more, len(extra))]] = True
            residual = np.bincount(seat_rows[removed].ravel(), minlength=len(self.need)).astype(float)
            residual[wanted] -= 1
            refill = self._greedy(residual, rng)
            if refill is not None:
                kept = np.bincount(seats[~removed], minlength=len(plan))
                return kept + refill
        return None

    def open(self, need: np.ndarray) -> np.ndarray:
        """Cells all of whose groups still have an open seat."""
        return (need[self.rows_of_cell] > 0).all(axis=1)

    def _greedy(self, need: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """Fill the scarcest group first (LEGACY-style: most seats needed per unit of open weight), by a cell drawn
        in proportion to its weight times the open seats of its groups, so that no rare group is stranded; the
        last two seats, where a greedy pass most often strands, are matched exactly."""
        need = need.copy()
        plan = np.zeros(len(self.keys), dtype=np.int64)
        attributes = self.rows_of_cell.shape[1]
        active = np.flatnonzero(self.open(need))  # shrinks as groups fill: closed cells never reopen
        for _ in range(int(round(need.sum() / attributes)) - 2):
            rows = self.rows_of_cell[active]
            score = self.weight[active] * np.prod(need[rows], axis=1)
            supply = np.bincount(rows.ravel(), weights=np.repeat(score, attributes), minlength=len(need))
            wanted = need > 0
            if (supply[wanted] <= 0).any():
                return None
            ratio = np.where(wanted, need / np.where(supply > 0, supply, 1.0), -1.0)
            scarcest = int(np.argmax(ratio))
            k = int(pick_weighted(score * (rows == scarcest).any(axis=1), 1, rng)[0])
            plan[active[k]] += 1
            need[rows[k]] -= 1
            if (need[rows[k]] == 0).any():
                active = active[(need[rows] > 0).all(axis=1)]
        tail = self._finish(need, rng)
        return None if tail is None else plan + tail

    def pick_exactly(self, need: np.ndarray, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """With at most three seats left: a cell drawn by weight among exactly those after which the remaining
        seats can be filled, and a completion after it."""
        candidates, completions = [], []
        for cell in np.flatnonzero(self.open(need)):
            after = need.copy()
            after[self.rows_of_cell[cell]] -= 1
            tail = self._finish(after, rng)
            if tail is not None:
                candidates.append(cell)
                completions.append(tail)
        if not candidates:
            raise JuryError("seat allocation failed: no open cell can complete the targets")
        k = int(pick_weighted(self.weight[candidates], 1, rng)[0])
        return int(candidates[k]), completions[k]

    def _finish(self, need: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """Exact completion of at most two seats: the cell, or a pair drawn by the product of their weights."""
        plan = np.zeros(len(self.keys), dtype=np.int64)
        seats = int(round(need.sum() / self.rows_of_cell.shape[1]))
        if seats == 0:
            return plan
        # Per attribute, the sum of the open groups' indices (weighted by open seats) fixes the partner's group.
        index_sum = np.array([
            np.dot(need[lo:hi], np.arange(hi - lo)) for lo, hi in zip(self.offsets[:-1], self.offsets[1:])
        ])
        if seats == 1:
            cell = self._find(index_sum[None, :])[0]
            if cell < 0:
                return None
            plan[cell] = 1
            return plan
        first = np.flatnonzero(self.open(need))
        partner = self._find(np.rint(index_sum - self.keys[first]).astype(np.int64))
        found = partner >= 0
        if not found.any():
            return None
        first, partner = first[found], partner[found]
        k = int(pick_weighted(self.weight[first] * self.weight[partner], 1, rng)[0])
        plan[first[k]] += 1
        plan[partner[k]] += 1
        return plan

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """Cell index of each row of group indices, or -1 where the frame has no such cell."""
        valid = ((keys >= 0) & (keys < np.diff(self.offsets))).all(axis=1)
        codes = np.where(valid, keys @ self.radix, -1)
        pos = np.minimum(np.searchsorted(self.sorted_codes, codes), len(self.sorted_codes) - 1)
        return np.where(valid & (self.sorted_codes[pos] == codes), pos, -1)

    def _solve(self, need: np.ndarray) -> np.ndarray | None:
        """Exact integer feasibility over the open cells (HiGHS via scipy)."""
        from scipy.optimize import Bounds, LinearConstraint, milp  # rarely needed; scipy.optimize is slow to import
        from scipy.sparse import csr_array

        open_ = np.flatnonzero(self.open(need))
        plan = np.zeros(len(self.keys), dtype=np.int64)
        if need.sum() == 0:
            return plan
        if not len(open_):
            return None
        seats = need.sum() / self.rows_of_cell.shape[1]  # each open seat is counted once per attribute
        rows = self.rows_of_cell[open_].T.reshape(-1)  # one equality row per (attribute, group)
        cols = np.tile(np.arange(len(open_)), self.rows_of_cell.shape[1])
        matrix = csr_array((np.ones(len(rows)), (rows, cols)), shape=(len(need), len(open_)))
        result = milp(
            c=np.zeros(len(open_)),  # any completion will do: it only caches feasibility
            constraints=LinearConstraint(matrix, need, need),
            integrality=np.ones(len(open_)),
            bounds=Bounds(0, seats),
            options={"time_limit": _MILP_SECONDS},
        )
        if result.status == 0 and result.x is not None:
            plan[open_] = np.round(result.x).astype(np.int64)
            return plan
        return None  # infeasible, or not proven within the time limit


def _fill_seats(
    population: Population, attributes: list[str], targets: dict[str, dict[str, int]], size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Record indices for every seat (see the module docstring, step 3)."""
    if not attributes:
        return pick_weighted(population.weights, size, rng)
    cells = _Cells(population, attributes, targets)
    need = cells.need.copy()
    plan = cells.complete(need, rng)
    if plan is None:
        described = "; ".join(f"{a} {targets[a]}" for a in attributes)
        raise JuryError(f"no way found to meet these targets together from frame {population.name}: {described}")
    chosen = []
    for seat in range(size):
        if size - seat <= _EXACT_SEATS:
            cell, plan = cells.pick_exactly(need, rng)
        else:
            cell, plan = _pick_cell(cells, need, plan, rng)
        need[cells.rows_of_cell[cell]] -= 1
        members = cells.members[cell]
        chosen.append(members[pick_weighted(population.weights[members], 1, rng)[0]])
    return np.array(chosen, dtype=np.int64)


def _pick_cell(cells: _Cells, need: np.ndarray, plan: np.ndarray, rng: np.random.Generator):
    """A cell drawn by weight among open cells, rejecting those after which no completion is found; and the
    completion (`plan`, kept from the last seat while the drawn cell is in it)."""
    banned = np.zeros(len(cells.keys), dtype=bool)
    while True:
        open_ = cells.open(need) & ~banned
        if not open_.any():  # cannot happen while `plan` is a valid completion; guard the invariant
            raise JuryError("seat allocation failed: no open cell can complete the targets")
        cell = int(pick_weighted(cells.weight * open_, 1, rng)[0])
        if plan[cell] > 0:
            plan = plan.copy()
            plan[cell] -= 1
            return cell, plan
        replan = cells.repair(plan, cell, rng)
        if replan is None:
            after = need.copy()
            after[cells.rows_of_cell[cell]] -= 1
            replan = cells.complete(after, rng)
        if replan is not None:
            return cell, replan
        banned[cell] = True  # no completion found after this cell: it would strand a later target

"""The replay backend: each request answered from a recorded run's calls, with no model at all (one per role for
`--replay RUN`: assembly.recorded_models).

Records are the store's recorded calls (dicts, in call order), each with at least:
    request_hash   request.hash(<the recording model's name>) as computed by the recorder
    model          that model's name (the spec string, e.g. "openai:gpt-4.1-mini")
    response       the response text (or a GenerateResponse-shaped dict)
    choice, choice_logprobs, input_tokens, output_tokens (and, when recorded, cached_input_tokens, cache_write_tokens)
and optionally `finish_reason`, `tags` (a dict, or the store's `role`/`participant_id`/`phase` columns), `error` (a call that
failed is replayed as the same failure), `id`/`call_id`.

Matching. A request is answered by its hash plus an occurrence count: the k-th request with a given hash gets the
k-th recorded answer with that hash, whatever order concurrent requests with other hashes arrive in. The hash
includes the model name, and a run may use a different model per role, so each record is keyed by the hash the
recorder stored (computed with that record's own model name) and a request is tried against the name of each model
in the recording: first the ReplayModel's own `name` if it is one of them, then the others in order of first
appearance. When records carry tags, identical requests are matched to the record with equal tags first (two jurors
shown the same prompt get their own answers back), else the earliest unused one.

Several ReplayModels (e.g. one per role, each named after the role's original model so re-recorded hashes equal the
originals) should share one `ReplayBook` so occurrence counts are shared: `ReplayModel.for_models(records)`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from assembly.providers.base import Model
from assembly.providers.types import GenerateRequest, GenerateResponse, ModelError, Usage

# store column -> request tag it was recorded from (assembly.recorder writes tags["participant"] to participant_id)
_TAG_COLUMNS = {"role": "role", "participant_id": "participant", "participant": "participant", "phase": "phase",
                "round": "round"}


class ReplayMissError(ModelError):
    """The run asked for something the recording never answered (changed config, prompts or code)."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


def describe_request(request: GenerateRequest, limit: int = 80) -> str:
    """'role=juror participant=p3 phase=pre_ballot, last message "Cast your ballot…"' for error messages."""
    tags = " ".join(f"{k}={v}" for k, v in request.tags.items() if v is not None and not isinstance(v, (dict, list)))
    last = request.messages[-1].content if request.messages else ""
    last = " ".join(last.split())
    if len(last) > limit:
        last = last[: limit - 1] + "…"
    who = f"{tags}, " if tags else ""
    return f'{who}last message "{last}"'


def _record_tags(record: dict[str, Any]) -> dict[str, Any] | None:
    tags = record.get("tags")
    if isinstance(tags, dict):
        return tags
    found = {tag: record[column] for column, tag in _TAG_COLUMNS.items() if record.get(column) is not None}
    return found or None


def _tags_match(record_tags: dict[str, Any] | None, request_tags: dict[str, Any]) -> bool:
    if not record_tags:
        return False
    keys = set(record_tags) & set(request_tags)
    return bool(keys) and all(str(record_tags[k]) == str(request_tags[k]) for k in keys)


class ReplayBook:
    """Recorded calls indexed by request hash, with the state of what has been replayed. Shared by ReplayModels."""

    def __init__(self, records: Iterable[dict[str, Any]]):
        self.records = list(records)
        self.by_hash: dict[str, list[int]] = collections.defaultdict(list)
        self.models: list[str] = []
        for i, record in enumerate(self.records):
            for field in ("request_hash", "model"):
                if not record.get(field):
                    raise ValueError(f"recorded call #{i} has no {field!r}; cannot replay it")
            self.by_hash[record["request_hash"]].append(i)
            if record["model"] not in self.models:
                self.models.append(record["model"])
        self.used: set[int] = set()
        self.asked: collections.Counter[str] = collections.Counter()

    def scores_options(self, model: str | None = None) -> bool:
        """Whether the recording (of `model`, when it is a recorded model) carries option log-probabilities."""
        records = [r for r in self.records if r["model"] == model] if model in self.models else self.records
        return any(r.get("choice_logprobs") for r in records)

    def take(self, request: GenerateRequest, prefer: str | None = None) -> dict[str, Any]:
        names = ([prefer] if prefer in self.models else []) + [m for m in self.models if m != prefer]
        exhausted: tuple[str, str] | None = None
        for name in names:
            key = request.hash(name)
            indices = self.by_hash.get(key)
            if not indices:
                continue
            free = [i for i in indices if i not in self.used]
            if not free:
                exhausted = exhausted or (name, key)
                continue
            self.asked[key] += 1
            pick = next((i for i in free if _tags_match(_record_tags(self.records[i]), request.tags)), free[0])
            self.used.add(pick)
            return self.records[pick]
        if exhausted:
            name, key = exhausted
            self.asked[key] += 1
            raise ReplayMissError(
                f"replay miss: request #{self.asked[key]} like this one ({describe_request(request)}; model "
                f"{name}) but the recording answered it only {len(self.by_hash[key])} time(s)"
            )
        models = ", ".join(self.models) or "none"
        raise ReplayMissError(
            f"replay miss: no recorded call matches the request ({describe_request(request)}) for any recorded "
            f"model ({models}); the run differs from the recording (config, prompts, seed or code changed?)"
        )

    @property
    def remaining(self) -> int:
        return len(self.records) - len(self.used)


class ReplayModel(Model):
    """Answers every request from a recording; never calls a model. See the module docstring for matching."""

    def __init__(self, records: Iterable[dict[str, Any]] | ReplayBook, *, name: str = "replay"):
        self.book = records if isinstance(records, ReplayBook) else ReplayBook(records)
        self.name = name
        # take() never awaits, so concurrent requests need no lock
        self.scores_options = self.book.scores_options(name)

    @classmethod
    def for_models(cls, records: Iterable[dict[str, Any]]) -> dict[str, "ReplayModel"]:
        """One ReplayModel per recorded model name, sharing a ReplayBook: {original name: replay model}."""
        book = ReplayBook(records)
        return {name: cls(book, name=name) for name in book.models}

    @classmethod
    def from_spec(cls, spec, **options) -> "ReplayModel":
        records = options.get("records")
        if records is None:
            raise ValueError("ReplayModel needs records=...; build it from a recorded run, not from a spec")
        return cls(records, name=str(spec))

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        record = self.book.take(request, prefer=self.name)
        if record.get("error") and record.get("response") is None:
            raise ModelError(f"(replayed) {record['error']}", retryable=False)
        response = record.get("response")
        if isinstance(response, dict):
            base = GenerateResponse.model_validate(response)
        else:
            base = GenerateResponse(text="" if response is None else str(response), model=record["model"])
        choice = record.get("choice", base.choice)
        logprobs = record.get("choice_logprobs", base.choice_logprobs)
        usage = Usage(
            input_tokens=record.get("input_tokens") or base.usage.input_tokens,
            output_tokens=record.get("output_tokens") or base.usage.output_tokens,
            cached_input_tokens=record.get("cached_input_tokens") or base.usage.cached_input_tokens,
            cache_write_tokens=record.get("cache_write_tokens") or base.usage.cache_write_tokens,
        )
        raw = {"replayed": True}
        call_id = record.get("id") or record.get("call_id")
        if call_id:
            raw["recorded_call_id"] = call_id
        return base.model_copy(
            update={
                "model": record["model"],
                "choice": choice if request.choices else None,
                "choice_logprobs": logprobs if request.choices else None,
                "usage": usage,
                "finish_reason": record.get("finish_reason", base.finish_reason),
                "duration_s": 0.0,
                "attempts": 1,
                "cost_usd": None,
                "raw": raw,
            }
        )

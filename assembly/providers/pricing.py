"""Prices per model for cost accounting: USD per million input, output and prompt-cache tokens.

A small table ships in `prices.json` (beside this file); users override or extend it with a YAML or JSON file (or a
dict) of the same shape:

    openai:gpt-4.1-mini: {input: 0.4, output: 1.6, cached_input: 0.1}   # or [0.4, 1.6] / [0.4, 1.6, 0.1]
    anthropic:claude-x: {input: 3, output: 15, cached_input: 0.3, cache_write: 3.75}  # [input, output, cached, write]
    "openai:my-model@http://127.0.0.1:8000/v1": [0, 0]  # a model on your own server, by its full spec

Prompt caching. `Usage.input_tokens` counts every prompt token sent; of them, `cached_input_tokens` (read from the
provider's prompt cache) are priced at `cached_input` and `cache_write_tokens` (written to it) at `cache_write`, the
rest at `input`. A price that leaves these out gets its provider's rule, as a share of `input`:
  - openai (OpenAI and OpenAI-compatible servers): cached_input 0.5 x input (OpenAI's older models; newer ones list
    their own, commonly 0.25 or 0.1 x), cache_write 1 x input (OpenAI charges nothing extra for writes);
  - anthropic: cached_input 0.1 x input (cache reads), cache_write 1.25 x input (5-minute cache writes, the TTL the
    anthropic backend asks for);
  - anything else: both at the input price (no discount assumed).
The provider is the one of the model name being priced (`openai:...`), else the table key's.

Lookup of a model name (the spec string a backend was built from):
  1. the exact name;
  2. names with a custom base URL (`...@http://...`) stop here: a self-hosted model has no vendor price;
  3. the key of the same provider whose model id is the name's model id less a date snapshot suffix
     (`gpt-4.1-mini-2025-04-14` -> `gpt-4.1-mini`, `claude-sonnet-4-5-20250929` -> `claude-sonnet-4-5`);
     `gpt-4.1-mini` never matches `gpt-4.1`, and `claude-opus-4-8` never matches `claude-opus-4`.
A model with no price gets `cost_usd = None` (unknown), never 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union

from assembly.errors import SpecError
from assembly.providers.types import Usage

_SUFFIX = re.compile(r"^(-\d{4}-?\d{2}-?\d{2}|-latest)?$")  # a dated snapshot or alias of the same model


# provider -> (cached_input, cache_write) as shares of the input price, for prices that do not list them
CACHE_SHARES: dict[str, tuple[float, float]] = {"openai": (0.5, 1.0), "anthropic": (0.1, 1.25)}


@dataclass(frozen=True)
class Price:
    """USD per million tokens. `cached_input` / `cache_write` None: not given (see `for_provider`); `cost` then
    prices those tokens at `input`."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def for_provider(self, provider: str) -> "Price":
        """This price with the provider's default cache rates (CACHE_SHARES x input) where it gives none."""
        cached_share, write_share = CACHE_SHARES.get(provider, (1.0, 1.0))
        return Price(
            self.input, self.output,
            self.input * cached_share if self.cached_input is None else self.cached_input,
            self.input * write_share if self.cache_write is None else self.cache_write,
        )

    def cost(self, usage: Usage) -> float:
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        cached, written = max(usage.cached_input_tokens, 0), max(usage.cache_write_tokens, 0)
        fresh = max(usage.input_tokens - cached - written, 0)
        return (fresh * self.input + cached * cached_rate + written * write_rate
                + usage.output_tokens * self.output) / 1_000_000


PriceSource = Union[None, str, Path, Mapping[str, Any], "PriceTable"]


def _parse_price(key: str, value: Any, origin: str) -> Price:
    try:
        if isinstance(value, Mapping):
            inp = value.get("input", value.get("input_per_mtok"))
            out = value.get("output", value.get("output_per_mtok"))
            cached = value.get("cached_input", value.get("cached_input_per_mtok"))
            write = value.get("cache_write", value.get("cache_write_per_mtok"))
        elif isinstance(value, (list, tuple)) and 2 <= len(value) <= 4:
            inp, out, cached, write = [*value, None, None][:4]
        else:
            raise ValueError
        price = Price(float(inp), float(out), None if cached is None else float(cached),
                      None if write is None else float(write))
    except (TypeError, ValueError):
        raise SpecError(
            f"{origin}: price for {key!r} must be {{input: USD per 1M tokens, output: USD per 1M tokens"
            f"[, cached_input: ..., cache_write: ...]}} or [input, output[, cached_input[, cache_write]]]; "
            f"got {value!r}"
        ) from None
    if any(rate is not None and rate < 0 for rate in (price.input, price.output, price.cached_input, price.cache_write)):
        raise SpecError(f"{origin}: price for {key!r} is negative: {value!r}")
    return price


def _read_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise SpecError(f"price table {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise different types; both mean "not a price table"
        raise SpecError(f"price table {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"price table {path} must be a mapping of model -> price")
    return data


class PriceTable:
    """Model name -> Price, with the lookup rules in the module docstring."""

    def __init__(self, prices: Mapping[str, Price] | None = None):
        self.prices: dict[str, Price] = dict(prices or {})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], origin: str = "prices") -> "PriceTable":
        return cls({str(k): _parse_price(str(k), v, origin) for k, v in data.items() if not str(k).startswith("_")})

    @classmethod
    def default(cls) -> "PriceTable":
        text = resources.files("assembly.providers").joinpath("prices.json").read_text(encoding="utf-8")
        return cls.from_mapping(json.loads(text), origin="assembly/providers/prices.json")

    @classmethod
    def load(cls, source: PriceSource = None, *, defaults: bool = True) -> "PriceTable":
        """The shipped table overridden by `source` (a path to YAML/JSON, a dict, or a PriceTable)."""
        table = cls.default() if defaults else cls()
        if source is None:
            return table
        if isinstance(source, PriceTable):
            extra = source
        elif isinstance(source, Mapping):
            extra = cls.from_mapping(source)
        else:
            path = Path(source).expanduser()
            extra = cls.from_mapping(_read_file(path), origin=str(path))
        table.prices.update(extra.prices)
        return table

    def lookup(self, name: str) -> Price | None:
        """The price for model `name`, its cache rates filled in by provider (see the module docstring)."""
        provider, sep, model = name.partition(":")
        if not sep:
            provider, model = "", name
        found = self._find(name, provider, model)
        if found is None:
            return None
        key, price = found
        key_provider = key.partition(":")[0] if ":" in key else ""
        return price.for_provider(provider or key_provider)

    def _find(self, name: str, provider: str, model: str) -> tuple[str, Price] | None:
        if name in self.prices:
            return name, self.prices[name]
        if "@" in name:
            return None
        best: tuple[int, str, Price] | None = None
        for key, price in self.prices.items():
            k_provider, k_sep, k_model = key.partition(":")
            if not k_sep:
                k_provider, k_model = "", key
            if "@" in k_model or (k_provider and provider and k_provider != provider):
                continue
            if model.startswith(k_model) and _SUFFIX.match(model[len(k_model) :]):
                if best is None or len(k_model) > best[0]:
                    best = (len(k_model), key, price)
        return (best[1], best[2]) if best else None

    def cost(self, name: str, usage: Usage) -> float | None:
        price = self.lookup(name)
        return None if price is None else price.cost(usage)

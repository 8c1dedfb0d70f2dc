"""Prices per model for cost accounting: USD per million input and output tokens.

A small table ships in `prices.json` (beside this file); users override or extend it with a YAML or JSON file (or a
dict) of the same shape:

    openai:gpt-4.1-mini: {input: 0.4, output: 1.6}     # or [0.4, 1.6]
    "openai:my-model@http://127.0.0.1:8000/v1": [0, 0]  # a model on your own server, by its full spec

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


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1_000_000


PriceSource = Union[None, str, Path, Mapping[str, Any], "PriceTable"]


def _parse_price(key: str, value: Any, origin: str) -> Price:
    try:
        if isinstance(value, Mapping):
            inp = value.get("input", value.get("input_per_mtok"))
            out = value.get("output", value.get("output_per_mtok"))
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            inp, out = value
        else:
            raise ValueError
        price = Price(float(inp), float(out))
    except (TypeError, ValueError):
        raise SpecError(
            f"{origin}: price for {key!r} must be {{input: USD per 1M tokens, output: USD per 1M tokens}} "
            f"or [input, output]; got {value!r}"
        ) from None
    if price.input < 0 or price.output < 0:
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
        if name in self.prices:
            return self.prices[name]
        if "@" in name:
            return None
        provider, sep, model = name.partition(":")
        if not sep:
            provider, model = "", name
        best: tuple[int, Price] | None = None
        for key, price in self.prices.items():
            k_provider, k_sep, k_model = key.partition(":")
            if not k_sep:
                k_provider, k_model = "", key
            if "@" in k_model or (k_provider and provider and k_provider != provider):
                continue
            if model.startswith(k_model) and _SUFFIX.match(model[len(k_model) :]):
                if best is None or len(k_model) > best[0]:
                    best = (len(k_model), price)
        return best[1] if best else None

    def cost(self, name: str, usage: Usage) -> float | None:
        price = self.lookup(name)
        return None if price is None else price.cost(usage)

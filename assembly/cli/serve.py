"""`assembly serve`: share one model (e.g. a fine-tuned juror) with many processes over an OpenAI-compatible API."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Optional

import typer


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Model spec to serve: embedded, local:<folder or hub id>[+<adapter>], ..."),
    ] = "embedded",
    adapter: Annotated[
        Optional[str],
        typer.Option("--adapter", help="A peft adapter folder to apply to the embedded or a local: model."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind. Anything but loopback exposes the model.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    token: Annotated[
        Optional[str],
        typer.Option(envvar="ASSEMBLY_SERVE_TOKEN", show_default=False,
                     help="Require 'Authorization: Bearer <token>' (clients: set OPENAI_API_KEY to it)."),
    ] = None,
    max_body_kb: Annotated[int, typer.Option(help="Refuse request bodies larger than this (HTTP 413).")] = 1024,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 4096,
    max_queue: Annotated[
        int, typer.Option(help="Requests inside the server at once, queued or running; more get HTTP 429.")
    ] = 64,
    max_prompt_tokens: Annotated[
        Optional[int],
        typer.Option(show_default=False,
                     help="Refuse prompts longer than this (HTTP 400); the model's context minus max_tokens always "
                          "applies."),
    ] = None,
    max_choices: Annotated[int, typer.Option(help="Most options a 'choices' request may list.")] = 32,
    max_choice_chars: Annotated[
        int, typer.Option(help="Longest option, in characters, a 'choices' request may list.")
    ] = 500,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for a local model (default: torch's).")] = None,
    name: Annotated[
        Optional[str], typer.Option(help="Model id reported by /v1/models and in replies (default: the spec).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/chat/completions with streaming, /v1/models).

    Concurrent requests share forward passes; at most --max-queue are inside at once (more: 429), a client that
    hangs up frees its place, and prompts that do not fit are refused (400), never cut. Point other runs at it
    with `--model openai:<name>@http://HOST:PORT/v1`.
    """
    from assembly.cli.console import err
    from assembly.errors import MissingExtraError, SpecError
    from assembly.providers.registry import load_model, parse_model_spec

    try:
        from assembly.serving.server import run_server
    except ImportError as exc:
        raise MissingExtraError(
            f"assembly serve needs fastapi and uvicorn ({exc.name} is missing): pip install 'assembly-sim[serve]'"
        ) from None

    spec = parse_model_spec(model)
    limits = {"--max-body-kb": max_body_kb, "--max-tokens": max_tokens, "--max-queue": max_queue,
              "--max-choices": max_choices, "--max-choice-chars": max_choice_chars,
              "--max-prompt-tokens": 1 if max_prompt_tokens is None else max_prompt_tokens}
    bad = [flag for flag, value in limits.items() if value < 1]
    if bad:
        raise SpecError(f"{', '.join(bad)} must be positive")
    options = {"threads": threads} if threads else {}
    if adapter and spec.provider == "embedded":
        from assembly.providers.local import EmbeddedModel

        label = f"embedded+{adapter}"
        err.print(f"loading {label} ...", highlight=False)
        loaded = EmbeddedModel(name=label, adapter=adapter, **options)
    else:
        if adapter:
            if spec.provider != "local" or spec.adapter:
                raise SpecError(f"--adapter needs --model embedded or local:<folder> (without '+adapter'); "
                                f"got --model {model!r}")
            spec = parse_model_spec(f"{model}+{adapter}")
        label = str(spec)
        err.print(f"loading {label} ...", highlight=False)
        loaded = load_model(spec, **options)
    if not _is_loopback(host) and not token:
        err.print(f"[yellow]warning:[/yellow] serving on {host} without --token: anyone who can reach it can use it")
    served = name or label
    err.print(f"serving {served} at http://{host}:{port}/v1 (bearer token {'required' if token else 'not required'}); "
              f"clients: --model 'openai:{served}@http://{host}:{port}/v1'", highlight=False)
    run_server(loaded, host=host, port=port, token=token, max_body_bytes=max_body_kb * 1024, model_id=served,
               max_tokens_limit=max_tokens, max_queue=max_queue, max_prompt_tokens=max_prompt_tokens,
               max_choices=max_choices, max_choice_chars=max_choice_chars, log_level=log_level)


if __name__ == "__main__":  # pragma: no cover - `python -m assembly.cli.serve`
    typer.run(serve)

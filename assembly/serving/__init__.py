"""`assembly serve`: an OpenAI-compatible HTTP server for any Model (typically a local model, maybe with an adapter).

Endpoints (OpenAI's wire format, so the official `openai` client and any OpenAI-compatible tool can use it):
    POST /v1/chat/completions   messages, max_tokens | max_completion_tokens, temperature, top_p, seed, stop,
                                n (1 only), stream (+ stream_options.include_usage), response_format
                                (json_schema / json_object, see below), logprobs + top_logprobs (0..20; not with
                                stream)
    GET  /v1/models             the one served model; its entry carries `x_assembly: {scores_options, spec}`
    GET  /v1/models/{id}
    GET  /health                unauthenticated probe: {status, model, in_flight, max_queue}; 503 while shutting down

Extension for constrained choice (ballots): a body field `"choices": ["yes", "no", ...]` (at most `max_choices`
options of at most `max_choice_chars` characters, else 400 too_many_choices / choice_too_long) becomes
`GenerateRequest.choices`. The reply's message then carries `x_choice` (the chosen option) and, when the model
scores options, `x_choice_logprobs` ({option: log-probability}); its `content` is the chosen option. The assembly
`openai` backend uses this automatically against a loopback `assembly serve`, so remote jurors still cast scored
ballots. Other clients can ignore the extra fields.

Logprobs: `logprobs: true` (with `top_logprobs: n`, 0..20) becomes `GenerateRequest.top_logprobs`, and the reply's
`choices[0].logprobs` is OpenAI's `{"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}`,
one entry per generated token (the end-of-turn token that stopped it included), when the model reports them (a
local model does: its own log-probabilities, before temperature); otherwise it is null. So an `openai` client with
`server_choices=False` scores ballots here from top_logprobs as it would against any server. `bytes` are the
token's own bytes where the model knows them (byte-level BPE), else the UTF-8 of its text. Streaming with logprobs
is refused (400): the answer is streamed in pieces of text, not tokens.

Structured output: `response_format` becomes `request.json_schema` ({"type": "object"} for json_object) when the
model says it honours schemas (`Model.honours_json_schema`: a LocalModel constrains its decoding with
lm-format-enforcer, see assembly.providers.constrained; the OpenAI and Anthropic backends use their provider's
structured output); for any other model it is refused (400 unsupported_response_format), never silently ignored.

Prompts that do not fit are refused, not cut: before a request is queued, the model counts its prompt tokens
(`Model.count_prompt_tokens`; for `choices`, plus the longest option) and a prompt over the model's context minus
max_tokens, or over `max_prompt_tokens`, is a 400 with code context_length_exceeded (param "messages"). Backends
that cannot count are not checked here.

Concurrency: every request awaits the model on the server's event loop; a LocalModel batches concurrent calls (its
micro-batcher), so concurrent HTTP requests share forward passes. The queue is bounded: at most `max_queue`
requests are inside the server at once, queued or running (a stream until its last byte); one more is answered
429 rate_limit_exceeded with Retry-After at once, and once shutdown has begun (Ctrl-C, SIGTERM, ServerThread.stop)
new requests get 503 server_shutting_down while those inside finish. A client that hangs up is dropped: the
request's task is cancelled (the handler races it against the ASGI disconnect message; Starlette alone would let
it run), so a LocalModel skips it if it is still queued or drops its row from the decoding loop at the next token,
and its place in the queue is free at once (the access log shows 499).

Streaming is real: `model.stream` yields text deltas as they are decoded (a LocalModel's batching thread hands each
settled piece of text to the request's event loop: no half UTF-8 character, nothing that may still turn out to be
a stop string), sent as OpenAI chunks (role, content deltas, finish + x_choice extras, usage with
stream_options.include_usage, `data: [DONE]`). Backends without token streaming answer through the protocol's
default, the whole text in one delta. The status line waits for the first delta, so a request that fails at once
still gets its HTTP error; a failure after that ends the stream with an OpenAI-shaped `data: {"error": ...}` event.

Safety: binds 127.0.0.1 by default; optional bearer token (constant-time compare; 401 in OpenAI's error shape);
bodies over `max_body_bytes` -> 413, invalid JSON -> 400, a well-formed body with bad fields -> 400, all as
`{"error": {"message", "type", "param", "code"}}`. The token is never logged or echoed.

Modules, in the order a request meets them: `schemas` (the request body and its GenerateRequest), `limits` (body
size, the bounded queue, the context check), `disconnects` (a client that hangs up is dropped), `replies` (the
completion JSON and its stream chunks), `errors` (OpenAI's error shape), `app` (the FastAPI app and its routes),
`server` (uvicorn: a background ServerThread for tests and embedding, run_server for the CLI). Importing this
package loads nothing; fastapi and uvicorn load with those modules.
"""

"""uvicorn around the app: ServerThread (a background thread on a free port, for tests and embedding) and
run_server (the foreground server of `assembly serve`). Shutdown closes the queue first: new requests get 503 while
those inside finish."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from assembly.providers.base import Model
from assembly.serving.app import create_app
from assembly.serving.limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CHOICE_CHARS,
    DEFAULT_MAX_CHOICES,
    DEFAULT_MAX_QUEUE,
)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """Run an app with uvicorn in a background thread on 127.0.0.1 (port 0: a free one). For tests and embedding:

        with ServerThread(create_app(model)) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="x")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self._sock = _bind(host, port)
        self.app = app
        self.host = host
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True,
                                        name=f"assembly-serve-{self.port}")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        _close_admission(self.app)
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _close_admission(app: Any) -> None:
    """New requests get 503 from now on, while those inside finish (uvicorn's graceful shutdown)."""
    admission = getattr(getattr(app, "state", None), "admission", None)
    if admission is not None:
        admission.close()


def run_server(
    model: Model,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_id: str | None = None,
    max_tokens_limit: int = 4096,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_prompt_tokens: int | None = None,
    max_choices: int = DEFAULT_MAX_CHOICES,
    max_choice_chars: int = DEFAULT_MAX_CHOICE_CHARS,
    log_level: str = "info",
) -> None:
    """Serve `model` in the foreground until interrupted; the model is closed at shutdown."""
    import uvicorn

    app = create_app(model, model_id=model_id, token=token, max_body_bytes=max_body_bytes,
                     max_tokens_limit=max_tokens_limit, max_queue=max_queue, max_prompt_tokens=max_prompt_tokens,
                     max_choices=max_choices, max_choice_chars=max_choice_chars, close_model=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:  # Ctrl-C / SIGTERM: refuse new work first
            _close_admission(app)
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")).run()

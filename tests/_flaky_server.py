"""A misbehaving OpenAI-compatible server for the openai engine's retry tests (stdlib only).

Each request's prompt is its own script: a comma-separated list of what the server does on successive
attempts of that prompt, then a canned success. `"429,500,slow"` answers 429 (with `Retry-After`),
then 500, then sleeps past the client's timeout, then succeeds; `"500*9"` fails nine times; `"400"`
is a client error. A prompt without a script (e.g. "hello") succeeds at once. The server counts
attempts per prompt and the requests in flight (`InFlight`).
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CANNED_TEXT = "ok"


def parse_script(prompt: str) -> list[str]:
    steps = []
    for part in prompt.split(","):
        step, _, times = part.strip().partition("*")
        if step in ("429", "500", "503", "400", "slow"):
            steps += [step] * int(times or 1)
    return steps


class InFlight:
    """Requests being handled now, and the most ever at once; one gauge may be shared by several servers."""

    def __init__(self):
        self.now = self.peak = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self._lock:
            self.now -= 1


class FlakyServer:
    def __init__(self, *, delay: float = 0.0, slow_s: float = 2.0, retry_after: str | None = "0",
                 in_flight: InFlight | None = None):
        """delay: seconds every successful answer takes (so concurrency is observable);
        slow_s: how long a "slow" step sleeps; retry_after: the 429 `Retry-After` header (None: omit);
        in_flight: a gauge to share with other servers (default: this server's own)."""
        self.delay, self.slow_s, self.retry_after = delay, slow_s, retry_after
        self.attempts: Counter[str] = Counter()  # prompt -> requests received
        self.requests = 0
        self.in_flight = in_flight or InFlight()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    def respond(self, body: dict) -> tuple[int, dict, dict]:
        """(status, headers, json) for one request; runs in the handler thread."""
        prompt = str(body.get("prompt", ""))
        with self._lock:
            attempt = self.attempts[prompt]
            self.attempts[prompt] += 1
        script = parse_script(prompt)
        step = script[attempt] if attempt < len(script) else "ok"
        if step == "slow":
            time.sleep(self.slow_s)
            step = "ok"  # if the client is still listening, it gets an answer
        if step == "429":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return 429, headers, _error("rate limited", 429)
        if step in ("500", "503"):
            return int(step), {}, _error("server fell over", int(step))
        if step == "400":
            return 400, {}, _error("prompt is not allowed here", 400)
        time.sleep(self.delay)
        return 200, {}, _completion(body)


def _error(message: str, code: int) -> dict:
    return {"error": {"message": message, "type": "TestError", "code": code}}


def _completion(body: dict) -> dict:
    # Deliberately without vLLM's `token_ids`: the engine must re-tokenize the text.
    choices = [{"index": i, "text": CANNED_TEXT, "logprobs": None, "finish_reason": "stop"}
               for i in range(int(body.get("n", 1)))]
    return {"id": "cmpl-test", "object": "text_completion", "model": body.get("model"), "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def _handler(server: FlakyServer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # /v1/models: no max_model_len, as on non-vLLM servers
            self._send(200, {}, {"object": "list", "data": [{"id": "flaky", "object": "model"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with server._lock:
                server.requests += 1
            # Leave the gauge before writing: the client cannot see the answer (and start another) earlier.
            with server.in_flight:
                status, headers, payload = server.respond(body)
            self._send(status, headers, payload)

        def _send(self, status, headers, payload):
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def log_message(self, *args):
            pass

    return Handler

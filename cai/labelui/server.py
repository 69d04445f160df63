"""`cai label-ui`: a FastAPI app serving the labelling page, its JSON API, and the critique-trace viewer.

    GET  /                  the comparison page (static HTML + JS; model text is only ever set as textContent)
    GET  /traces            read-only viewer of the `trace` table (answer, then each round's critique/revision)
    GET  /api/config        whether annotator tokens are required; dataset name and size
    GET  /api/next          the annotator's next unanswered pair (no AI label in it) and their progress
    POST /api/label         {pair_id, choice: left|right|tie|skip, note, seconds} -> committed, then the AI's
                            label and principles are revealed
    GET  /api/traces[/{id}] trace list / one conversation

    POST /api/session       {token} -> the annotator's session cookie (the page's sign-in form)

Security: binds 127.0.0.1 unless `allow_remote`, which also requires annotator tokens and TLS (`certfile`,
`keyfile`; plain HTTP only with `insecure`). A token given in a link (`/?token=T`) is moved into a session
cookie (HttpOnly, SameSite=Strict, Secure under TLS) and the browser is redirected to the address without
it, so it stays out of history, logs and the Referer. Every API call carries a custom header
(`X-Cai-Annotator`, `X-Cai-Token`, or `X-Cai-Session` beside the cookie), which a cross-site page cannot
send without a CORS preflight this app never grants; the Host header is checked on local binds (DNS
rebinding); a request body is capped at `MAX_BODY` bytes as it streams in, whatever its framing; a strict
Content-Security-Policy forbids inline script, so even unescaped text could not run.
"""
from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field

from cai.errors import InputError
from cai.labelui.pairs import Pair, display_order, load_pairs, load_traces, principle_texts
from cai.labelui.store import LabelStore, default_db

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css", "traces.js": "text/javascript"}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
NAME_RE = re.compile(r"^[\w.@ -]{1,64}$")
MAX_BODY = 16_384
"""Largest request body accepted (bytes); the biggest valid label (a 2000-character note) is ~8 kB."""
COOKIE = "cai_token"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass
class ServerConfig:
    """Settings of `cai label-ui`."""

    data: str
    """Dataset directory written by `cai rlaif`, `cai label`, `cai sample` or `cai critique`."""
    db: str = ""
    """SQLite file of human labels; empty means DATA/human_labels.sqlite."""
    host: str = "127.0.0.1"
    """Interface to bind. Anything but a loopback address needs `allow_remote`, `tokens` and TLS (or
    `insecure`)."""
    port: int = 8765
    """TCP port."""
    allow_remote: bool = False
    """Permit binding a non-loopback host (the page is then reachable by anyone who can reach the port)."""
    tokens: str = ""
    """File of annotator tokens, one `NAME TOKEN` per line (`#` comments); when set, every API call must
    carry a listed token (at least 16 characters) and the annotator is the token's name."""
    constitution: str | None = None
    """Constitution whose principle texts are revealed after an answer; default: the one the data names."""
    certfile: str = ""
    """PEM certificate (chain) to serve HTTPS with; needs `keyfile`."""
    keyfile: str = ""
    """PEM private key of `certfile`."""
    insecure: bool = False
    """Permit a non-loopback bind over plain HTTP (tokens and labels then cross the network unencrypted)."""

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise InputError("must be in 1..65535", field="--port")
        if bool(self.certfile) != bool(self.keyfile):
            raise InputError("TLS needs both --certfile and --keyfile",
                             field="--keyfile" if self.certfile else "--certfile")
        for flag, path in (("--certfile", self.certfile), ("--keyfile", self.keyfile)):
            if path and not Path(path).is_file():
                raise InputError("file not found", file=path, field=flag)
        if self.host not in LOCAL_HOSTS:
            if not self.allow_remote:
                raise InputError(f"binding {self.host!r} exposes the page beyond this machine; pass "
                                 "--allow-remote (and --tokens FILE) to do so", field="--host")
            if not self.tokens:
                raise InputError("a non-loopback host needs annotator tokens (--tokens FILE)", field="--tokens")
            if not self.tls and not self.insecure:
                raise InputError("a non-loopback host sends tokens and labels over the network: serve HTTPS "
                                 "(--certfile FILE --keyfile FILE), or pass --insecure for plain HTTP",
                                 field="--certfile")
        if not self.db:
            self.db = str(default_db(self.data))

    @property
    def tls(self) -> bool:
        return bool(self.certfile)

    def ssl_context(self) -> ssl.SSLContext:
        """The server's TLS context; an unreadable certificate or a key that does not match is one line."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        except (ssl.SSLError, OSError) as e:
            raise InputError(f"cannot load the certificate and key: {e}", file=self.certfile,
                             field="--certfile") from None
        return ctx


def read_tokens(path: str) -> dict[str, str]:
    """token -> annotator name from a `NAME TOKEN` file; mistakes name the line."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p, field="--tokens")
    out: dict[str, str] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError("expected `NAME TOKEN`", file=p, line=n, col=1)
        name, token = parts
        if not NAME_RE.match(name):
            raise InputError(f"invalid annotator name {name!r}", file=p, line=n, col=1)
        if len(token) < 16:
            raise InputError("token shorter than 16 characters", file=p, line=n, col=len(name) + 2)
        if token in out:
            raise InputError("duplicate token", file=p, line=n, col=len(name) + 2)
        out[token] = name
    if not out:
        raise InputError("no tokens in the file", file=p, field="--tokens")
    return out


class Body(BaseModel):
    """POST /api/label: unknown keys, wrong types and out-of-range values are a 422."""
    model_config = ConfigDict(extra="forbid", strict=True)
    pair_id: str = Field(min_length=1, max_length=512)
    choice: Literal["left", "right", "tie", "skip"]
    note: str = Field(default="", max_length=2000)
    seconds: float | None = Field(default=None, ge=0, le=86_400)


class SessionBody(BaseModel):
    """POST /api/session: the token an annotator types into the sign-in form."""
    model_config = ConfigDict(extra="forbid", strict=True)
    token: str = Field(min_length=1, max_length=512)


class BodyCap:
    """ASGI middleware: a request whose body exceeds `limit` bytes is answered 413 without being read further
    and without reaching the app, whether its size is declared (`Content-Length`) or not (chunked). The
    body is read off the stream here, at most `limit` + one chunk, and replayed to the app."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _json_response(send, 400, "invalid Content-Length")
            if int(length) > self.limit:
                return await _json_response(send, 413, "request body too large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await _json_response(send, 413, "request body too large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # the app waits for a disconnect after the body
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return await self.app(scope, replay, send)


async def _json_response(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), (b"content-security-policy", CSP.encode()),
               *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _pair_view(pair: Pair, annotator: str) -> dict[str, Any]:
    left, right = display_order(annotator, pair.id)
    texts = {"a": pair.a, "b": pair.b}
    return {"id": pair.id, "prompt": pair.prompt, "left": texts[left], "right": texts[right]}


def _reveal(pair: Pair, annotator: str, texts: dict[str, str]) -> dict[str, Any]:
    left, _ = display_order(annotator, pair.id)
    ai = None if pair.ai_choice is None else ("left" if pair.ai_choice == left else "right")
    return {"ai": ai, "p_chosen": pair.ai_p_chosen, "source": pair.source,
            "principles": [{"id": p, "text": texts.get(p, "")} for p in pair.principle_ids]}


def create_app(cfg: ServerConfig):
    """The ASGI app for one dataset and label store."""
    from fastapi import Cookie, FastAPI, Header, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

    pairs = load_pairs(cfg.data)
    by_id = {p.id: p for p in pairs}
    texts = principle_texts(cfg.data, cfg.constitution)
    tokens = read_tokens(cfg.tokens) if cfg.tokens else {}
    convs = load_traces(cfg.data)
    store = LabelStore(cfg.db)
    local = cfg.host in LOCAL_HOSTS

    app = FastAPI(title="cai label-ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if local and host not in LOCAL_HOSTS:  # DNS rebinding: a foreign name resolving to 127.0.0.1
            return JSONResponse({"detail": "unexpected Host header"}, status_code=421)
        link_token = request.query_params.get("token")
        if request.method == "GET" and link_token is not None and not request.url.path.startswith("/api/"):
            resp = link_sign_in(request, link_token)
        else:
            resp = await call_next(request)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers.update(SECURITY_HEADERS)
        return resp

    def link_sign_in(request: Request, token: str):
        """`PAGE?token=T`: T into the session cookie, then the same page without it (out of the history)."""
        if tokens and token not in tokens:
            return JSONResponse({"detail": "unknown annotator token"}, status_code=401)
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        resp = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
        if tokens:
            set_session(resp, token)
        return resp

    def set_session(resp, token: str) -> None:
        # no Max-Age: the cookie ends with the browser session
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=cfg.tls, path="/")

    def token_of(header: str | None, session: str | None, cookie: str | None) -> str | None:
        """The header's token, else the cookie's when the custom `X-Cai-Session` header vouches that the
        request comes from this app's own script (SameSite=Strict already keeps cross-site pages out)."""
        return header or (cookie if session else None)

    def annotator(name: str | None, token: str | None) -> str:
        if tokens:
            if not token or token not in tokens:
                raise HTTPException(401, "missing or unknown annotator token")
            return tokens[token]
        if not name or not NAME_RE.match(name):
            raise HTTPException(401, "missing or invalid annotator name (letters, digits, . @ - _ and spaces)")
        return name.strip()

    def progress(who: str) -> tuple[dict[str, Any], set[str]]:
        answered: dict[str, str] = {}
        for lab in store.current(who):
            p = by_id.get(lab.pair_id)
            if p is not None and p.hash == lab.pair_hash:  # a label of other texts is stale: ask again
                answered[lab.pair_id] = lab.choice
        skipped = sum(1 for c in answered.values() if c == "skip")
        return {"labelled": len(answered) - skipped, "skipped": skipped, "total": len(pairs)}, set(answered)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/traces")
    def traces_page():
        return FileResponse(STATIC / "traces.html", media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/api/config")
    def config():
        return {"tokens_required": bool(tokens), "data": Path(cfg.data).name, "pairs": len(pairs)}

    @app.post("/api/session")
    def session(body: SessionBody, x_cai_session: str | None = Header(None)):
        if not tokens:
            raise HTTPException(404, "this server has no annotator tokens: sign in by name")
        if not x_cai_session:
            raise HTTPException(401, "missing X-Cai-Session header")
        if body.token not in tokens:
            raise HTTPException(401, "unknown annotator token")
        resp = JSONResponse({"annotator": tokens[body.token]})
        set_session(resp, body.token)
        return resp

    @app.get("/api/next")
    def next_pair(x_cai_annotator: str | None = Header(None), x_cai_token: str | None = Header(None),
                  x_cai_session: str | None = Header(None), cai_token: str | None = Cookie(None)):
        who = annotator(x_cai_annotator, token_of(x_cai_token, x_cai_session, cai_token))
        prog, answered = progress(who)
        pair = next((p for p in pairs if p.id not in answered), None)
        return {"annotator": who, "progress": prog, "pair": pair and _pair_view(pair, who)}

    @app.post("/api/label")
    def post_label(body: Body, x_cai_annotator: str | None = Header(None), x_cai_token: str | None = Header(None),
                   x_cai_session: str | None = Header(None), cai_token: str | None = Cookie(None)):
        who = annotator(x_cai_annotator, token_of(x_cai_token, x_cai_session, cai_token))
        pair = by_id.get(body.pair_id)
        if pair is None:
            raise HTTPException(404, f"no pair {body.pair_id!r} in this dataset")
        left, right = display_order(who, pair.id)
        choice = {"left": left, "right": right}.get(body.choice, body.choice)
        row = store.add(pair_id=pair.id, pair_hash=pair.hash, annotator=who, choice=choice, shown_left=left,
                        note=body.note.strip(), seconds=body.seconds)  # committed (fsynced) before we answer
        prog, _ = progress(who)
        return {"saved": row, "progress": prog, "reveal": _reveal(pair, who, texts)}

    def reader(token: str | None) -> None:
        """Traces need no annotator name, but with tokens (a remote bind) only token holders read them."""
        if tokens and (not token or token not in tokens):
            raise HTTPException(401, "missing or unknown annotator token")

    @app.get("/api/traces")
    def traces(offset: int = 0, limit: int = 200, x_cai_token: str | None = Header(None),
               x_cai_session: str | None = Header(None), cai_token: str | None = Cookie(None)):
        reader(token_of(x_cai_token, x_cai_session, cai_token))
        items = [{"id": c["id"], "prompt": c["prompt"], "status": c["status"], "rounds": len(c["rounds"])}
                 for c in convs[max(0, offset):max(0, offset) + min(max(1, limit), 1000)]]
        return {"total": len(convs), "items": items}

    @app.get("/api/traces/{conv_id}")
    def trace(conv_id: str, x_cai_token: str | None = Header(None), x_cai_session: str | None = Header(None),
              cai_token: str | None = Cookie(None)):
        reader(token_of(x_cai_token, x_cai_session, cai_token))
        for c in convs:
            if c["id"] == conv_id:
                rounds = [{**r, "principle_text": texts.get(r["principle_id"] or "", "")} for r in c["rounds"]]
                return {**c, "rounds": rounds}
        raise HTTPException(404, "no such conversation")

    @app.exception_handler(ValueError)
    async def bad_value(_request, exc):  # never a 500 with a traceback for a malformed request
        return JSONResponse({"detail": str(exc)[:200]}, status_code=400)

    app.add_middleware(BodyCap, limit=MAX_BODY)  # outermost: no body over the cap reaches anything else
    return app


def serve(cfg: ServerConfig) -> None:
    """Run the page until interrupted (uvicorn, one process; SQLite writes are serialised)."""
    import socket

    import uvicorn

    if cfg.tls:
        cfg.ssl_context()  # a bad certificate or key is one line, before anything listens
    app = create_app(cfg)
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    with socket.socket(family) as s:  # a busy port is the user's to fix: one line, not uvicorn's traceback
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((cfg.host, cfg.port))
        except OSError as e:
            raise InputError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror}", field="--port") from None
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    scheme = "https" if cfg.tls else "http"
    link = "?token=YOUR_TOKEN" if cfg.tokens else ""
    print(f"cai label-ui: {len(app.state.store.current())} labels in {cfg.db}; "
          f"open {scheme}://{shown}:{cfg.port}/{link}", flush=True)
    tls = {"ssl_certfile": cfg.certfile, "ssl_keyfile": cfg.keyfile} if cfg.tls else {}
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False, **tls)

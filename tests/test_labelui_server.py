"""The label server's contract without a browser: durability under SIGKILL, request validation (a malformed
POST is a 4xx and writes nothing), binding and token rules, stale labels, and the AI label hidden from
`/api/next`."""
import os
import signal
import sqlite3
import ssl
import subprocess

import httpx
import pytest
from conftest import run_cai
from fastapi.testclient import TestClient

from cai.errors import InputError
from cai.labelui.fixtures import make_critique_dataset, make_rlaif_dataset, start_server
from cai.labelui.pairs import display_order, load_pairs
from cai.labelui.server import ServerConfig, create_app


def _client(data, db, **kw):
    app = create_app(ServerConfig(data=str(data), db=str(db), **kw))
    return app, TestClient(app, base_url="http://127.0.0.1:8765")


def test_sigkill_after_submissions_loses_no_label(tmp_path):
    data = make_rlaif_dataset(tmp_path / "d", 8)
    db = tmp_path / "labels.sqlite"
    proc, url = start_server(data, "--db", str(db))
    sent = []
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            for who in ("ann", "bob"):
                for i in range(6):
                    nxt = c.get("/api/next", headers={"X-Cai-Annotator": who}).json()
                    r = c.post("/api/label", headers={"X-Cai-Annotator": who},
                               json={"pair_id": nxt["pair"]["id"], "choice": ["left", "right", "tie"][i % 3]})
                    assert r.status_code == 200, r.text
                    sent.append((nxt["pair"]["id"], who))
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook runs: only what was committed survives
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = con.execute("SELECT pair_id, annotator FROM labels ORDER BY id").fetchall()
    assert rows == sent and len(rows) == 12
    # a restarted server resumes each annotator where they stopped
    app, c = _client(data, db)
    assert c.get("/api/next", headers={"X-Cai-Annotator": "bob"}).json()["progress"] == \
        {"labelled": 6, "skipped": 0, "total": 8}


def test_malformed_posts_are_4xx_and_write_nothing(tmp_path):
    data = make_rlaif_dataset(tmp_path / "d", 3)
    app, c = _client(data, tmp_path / "l.sqlite")
    h = {"X-Cai-Annotator": "ann"}
    pid = load_pairs(data)[0].id
    bad = [
        ({"pair_id": "nope", "choice": "left"}, h, 404),
        ({"pair_id": pid, "choice": "up"}, h, 422),
        ({"pair_id": pid, "choice": "left", "extra": 1}, h, 422),
        ({"pair_id": 7, "choice": "left"}, h, 422),
        ({"pair_id": pid}, h, 422),
        ({"pair_id": pid, "choice": "left", "note": "x" * 2001}, h, 422),
        ({"pair_id": pid, "choice": "left", "seconds": -1}, h, 422),
        ({"pair_id": pid, "choice": "left", "note": None}, h, 422),
        ({"pair_id": pid, "choice": "left"}, {}, 401),
        ({"pair_id": pid, "choice": "left"}, {"X-Cai-Annotator": "<script>"}, 401),
    ]
    for body, headers, code in bad:
        r = c.post("/api/label", json=body, headers=headers)
        assert r.status_code == code, (body, r.status_code, r.text)
    for content, ctype, code in [(b"{not json", "application/json", 422), (b"[1, 2]", "application/json", 422),
                                 (b'{"pair_id": "%s", "choice": "left"}' % pid.encode(), "text/plain", 422),
                                 (b"pair_id=x&choice=left", "application/x-www-form-urlencoded", 422),
                                 (b"{" + b" " * 20_000 + b"}", "application/json", 413)]:
        r = c.post("/api/label", content=content, headers={**h, "Content-Type": ctype})
        assert r.status_code == code, (content[:40], ctype, r.status_code, r.text)
    assert app.state.store.count() == 0
    assert c.post("/api/label", json={"pair_id": pid, "choice": "tie", "note": " ok "}, headers=h).status_code == 200
    assert [(x.choice, x.note) for x in app.state.store.current()] == [("tie", "ok")]


def test_next_hides_the_ai_label_and_answers_map_back_to_canonical(tmp_path):
    data = make_rlaif_dataset(tmp_path / "d", 4)
    app, c = _client(data, tmp_path / "l.sqlite")
    h = {"X-Cai-Annotator": "ann"}
    nxt = c.get("/api/next", headers=h).json()
    assert set(nxt["pair"]) == {"id", "prompt", "left", "right"}  # no p_chosen, principle or AI choice
    pair = load_pairs(data)[0]
    left, right = display_order("ann", pair.id)
    assert nxt["pair"]["left"] == getattr(pair, left) and nxt["pair"]["right"] == getattr(pair, right)
    r = c.post("/api/label", json={"pair_id": pair.id, "choice": "right"}, headers=h).json()
    assert app.state.store.current()[0].choice == right
    # pair 0: p(a better) = 0.2, so the AI chose b with p_chosen 0.8
    assert r["reveal"] == {"ai": "left" if left == "b" else "right", "p_chosen": pytest.approx(0.8),
                           "source": "prefs", "principles": [{"id": "least-harmful",
                                                              "text": r["reveal"]["principles"][0]["text"]}]}
    assert r["reveal"]["principles"][0]["text"].startswith("Which of these assistant responses is less harmful")
    # display order: stable per (annotator, pair), and not the same for every pair
    orders = {display_order("ann", f"p{i}") for i in range(40)}
    assert orders == {("a", "b"), ("b", "a")} and display_order("ann", "p1") == display_order("ann", "p1")


def test_stale_labels_are_asked_again(tmp_path):
    data = make_rlaif_dataset(tmp_path / "d", 2)
    db = tmp_path / "l.sqlite"
    app, c = _client(data, db)
    h = {"X-Cai-Annotator": "ann"}
    for _ in range(2):
        pid = c.get("/api/next", headers=h).json()["pair"]["id"]
        c.post("/api/label", json={"pair_id": pid, "choice": "left"}, headers=h)
    assert c.get("/api/next", headers=h).json()["pair"] is None
    app.state.store.close()
    # the dataset is regenerated: pair 1 now holds other texts under the same id
    make_rlaif_dataset(tmp_path / "d", 2, texts={1: ("New text one.", "New text two.")})
    app, c = _client(data, db)
    nxt = c.get("/api/next", headers=h).json()
    assert nxt["pair"]["id"] == "p1:0-1" and nxt["progress"] == {"labelled": 1, "skipped": 0, "total": 2}


def test_binding_tokens_and_host_header(tmp_path):
    data = make_critique_dataset(tmp_path / "c", 2)
    with pytest.raises(InputError, match="--allow-remote"):
        ServerConfig(data=str(data), host="0.0.0.0")
    with pytest.raises(InputError, match="tokens"):
        ServerConfig(data=str(data), host="0.0.0.0", allow_remote=True)
    r = run_cai("label-ui", "--data", str(data), "--host", "0.0.0.0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--allow-remote" in r.stderr, r.stderr
    toks = tmp_path / "tokens.txt"
    toks.write_text("# annotators\nann 0123456789abcdef0123\nbob short\n")
    with pytest.raises(InputError, match=r"tokens.txt:3:5: token shorter than 16"):
        create_app(ServerConfig(data=str(data), db=str(tmp_path / "l.sqlite"), tokens=str(toks)))
    toks.write_text("ann 0123456789abcdef0123\n")
    app = create_app(ServerConfig(data=str(data), db=str(tmp_path / "l.sqlite"), host="0.0.0.0",
                                  allow_remote=True, tokens=str(toks), insecure=True))
    c = TestClient(app, base_url="http://labels.example.org")  # remote: any Host, but a token is required
    assert c.get("/api/config").json()["tokens_required"] is True
    assert c.get("/api/next", headers={"X-Cai-Annotator": "ann"}).status_code == 401
    assert c.get("/api/next", headers={"X-Cai-Token": "wrong-token-wrong-token"}).status_code == 401
    ok = c.get("/api/next", headers={"X-Cai-Token": "0123456789abcdef0123"}).json()
    assert ok["annotator"] == "ann" and ok["pair"]["id"] == "c0"  # critique prefs: revision vs initial answer
    # a local bind refuses foreign Host headers (DNS rebinding) and sends a strict CSP
    app, local = _client(data, tmp_path / "l2.sqlite")
    assert TestClient(app, base_url="http://evil.example").get("/api/config").status_code == 421
    r = local.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"] and "<script src=\"/static/app.js\"" in r.text
    # (a `..` in a static path is checked over a raw socket: test_static_files_refuse_raw_traversal_paths)
    tr = local.get("/api/traces/c1").json()
    assert [x["principle_id"] for x in tr["rounds"]] == ["harm-general", "harm-to-others"]
    assert tr["rounds"][0]["principle_text"].startswith("Point out every way")
    # with tokens, the trace API is for token holders only
    app = create_app(ServerConfig(data=str(data), db=str(tmp_path / "l3.sqlite"), tokens=str(toks)))
    c = TestClient(app, base_url="http://127.0.0.1:8765")
    assert c.get("/api/traces").status_code == 401 and c.get("/api/traces/c1").status_code == 401
    assert c.get("/api/traces", headers={"X-Cai-Token": "0123456789abcdef0123"}).json()["total"] == 2


def _chunks(total: int, size: int = 4096):
    """A request body of `total` bytes sent in chunks (no Content-Length: `Transfer-Encoding: chunked`)."""
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


def test_a_chunked_body_over_the_cap_is_413_before_validation(tmp_path):
    data = make_rlaif_dataset(tmp_path / "d", 3)
    app, c = _client(data, tmp_path / "l.sqlite")
    h = {"X-Cai-Annotator": "ann", "Content-Type": "application/json"}
    # 300 kB of JSON whitespace around a valid label: declaring no length must not get it read and parsed
    pid = load_pairs(data)[0].id
    body = [b'{"pair_id": "%s", "choice": "left"' % pid.encode(), *_chunks(300_000), b"}"]
    r = c.post("/api/label", content=iter(body), headers=h)
    assert r.status_code == 413 and r.json() == {"detail": "request body too large"}, r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert app.state.store.count() == 0
    # a chunked body under the cap is replayed to the app whole
    small = [b'{"pair_id": "%s", ' % pid.encode(), b'"choice": "tie"}']
    assert c.post("/api/label", content=iter(small), headers=h).status_code == 200
    assert [x.choice for x in app.state.store.current()] == ["tie"]
    # over a real socket (uvicorn): 413 after at most the cap and one chunk, and the server keeps serving
    proc, url = start_server(data, "--db", str(tmp_path / "l2.sqlite"))
    try:
        with httpx.Client(base_url=url, timeout=10) as hc:
            r = hc.post("/api/label", content=_chunks(300_000), headers=h)
            assert r.status_code == 413 and "content-length" not in {k.lower() for k in r.request.headers}
            assert hc.get("/api/config").status_code == 200
    finally:
        proc.kill()
        proc.wait()


def _self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_remote_bind_needs_tls_or_insecure(tmp_path):
    data = make_critique_dataset(tmp_path / "c", 2)
    toks = tmp_path / "tokens.txt"
    toks.write_text("ann 0123456789abcdef0123\n")
    remote = ("--data", str(data), "--host", "0.0.0.0", "--allow-remote", "--tokens", str(toks))
    r = run_cai("label-ui", *remote)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--certfile" in r.stderr and "--insecure" in r.stderr
    cert, key = _self_signed(tmp_path)
    r = run_cai("label-ui", *remote, "--certfile", str(cert))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--keyfile" in r.stderr, r.stderr
    r = run_cai("label-ui", *remote, "--certfile", str(cert), "--keyfile", str(tmp_path / "nokey.pem"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nokey.pem" in r.stderr, r.stderr
    # a key that is not the certificate's: one line before anything listens
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_key = _self_signed(other)
    r = run_cai("label-ui", *remote, "--certfile", str(cert),
                "--keyfile", str(wrong_key))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cert.pem" in r.stderr, r.stderr
    assert ServerConfig(data=str(data), host="0.0.0.0", allow_remote=True, tokens=str(toks), insecure=True).insecure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "cert.pem", "key.pem", "other", "tokens.txt"]


def test_https_and_a_token_link_become_a_secure_session_cookie(tmp_path):
    data = make_critique_dataset(tmp_path / "c", 2)
    toks = tmp_path / "tokens.txt"
    toks.write_text("ann 0123456789abcdef0123\n")
    cert, key = _self_signed(tmp_path)
    proc, url = start_server(data, "--db", str(tmp_path / "l.sqlite"), "--tokens", str(toks), "--certfile",
                             str(cert), "--keyfile", str(key), ca=cert)
    try:
        verify = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, timeout=10, verify=verify) as hc:
            r = hc.get("/?token=0123456789abcdef0123&view=1", follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/?view=1"  # the token leaves the URL
            cookie = r.headers["set-cookie"]
            attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
            assert cookie.startswith("cai_token=0123456789abcdef0123;")
            assert {"httponly", "secure", "samesite", "path"} <= attrs and "samesite=strict" in cookie.lower()
            assert "max-age" not in attrs and "expires" not in attrs  # ends with the browser session
            # the cookie alone is not enough: the app's own script vouches with X-Cai-Session
            assert hc.get("/api/next").status_code == 401
            ok = hc.get("/api/next", headers={"X-Cai-Session": "1"}).json()
            assert ok["annotator"] == "ann" and ok["pair"]["id"] == "c0"
            assert hc.get("/api/traces", headers={"X-Cai-Session": "1"}).json()["total"] == 2
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no page
            httpx.get(url.replace("https", "http") + "/api/config", timeout=5)
    finally:
        proc.kill()
        proc.wait()


def test_sign_in_form_and_bad_token_links(tmp_path):
    data = make_critique_dataset(tmp_path / "c", 2)
    toks = tmp_path / "tokens.txt"
    toks.write_text("ann 0123456789abcdef0123\n")
    app = create_app(ServerConfig(data=str(data), db=str(tmp_path / "l.sqlite"), tokens=str(toks)))
    c = TestClient(app, base_url="http://127.0.0.1:8765")
    r = c.get("/traces?token=wrong-token-wrong-token", follow_redirects=False)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    s = {"X-Cai-Session": "1"}
    assert c.post("/api/session", json={"token": "wrong-token-wrong-token"}, headers=s).status_code == 401
    assert c.post("/api/session", json={"token": "0123456789abcdef0123"}).status_code == 401  # no header
    assert "cai_token" not in c.cookies
    r = c.post("/api/session", json={"token": "0123456789abcdef0123"}, headers=s)
    assert r.json() == {"annotator": "ann"} and "secure" not in r.headers["set-cookie"].lower()  # plain HTTP
    nxt = c.get("/api/next", headers=s).json()
    assert c.post("/api/label", json={"pair_id": nxt["pair"]["id"], "choice": "left"}, headers=s).status_code == 200
    assert [x.annotator for x in app.state.store.current()] == ["ann"]
    # without tokens a name signs in: a token link is stripped, no cookie, and /api/session does not exist
    app, local = _client(data, tmp_path / "l2.sqlite")
    r = local.get("/?token=anything-at-all-123", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/" and "set-cookie" not in r.headers
    assert local.post("/api/session", json={"token": "x"}, headers=s).status_code == 404


def test_label_ui_and_export_mistakes_are_one_line(tmp_path):
    data = make_rlaif_dataset(tmp_path / "d", 3)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    toks = tmp_path / "toks"
    toks.write_text("ann 0123456789abcdef0123\n")
    cases = [
        (["label-ui", "--data", str(tmp_path / "none")], "none: --data: not a directory"),
        (["label-ui", "--data", str(notes)], "notes.txt: --data: not a directory"),
        (["label-ui", "--data", str(tmp_path)], "--data: no `prefs` or `pairs` table to label"),
        (["label-ui", "--data", str(data), "--db", str(notes)], "notes.txt: --db: cannot use it as the label store"),
        (["label-ui", "--data", str(data), "--db", str(data)], "d: --db: cannot use it as the label store"),
        (["label-ui", "--data", str(data), "--port", "70000"], "--port: must be in 1..65535"),
        (["label-ui", "--data", str(data), "--tokens", str(tmp_path / "none")], "none: --tokens: file not found"),
        (["label-ui", "--data", str(data), "--tokens", str(notes)], "notes.txt:1:4: token shorter than 16 characters"),
        (["label-ui", "--data", str(data), "--keyfile", str(notes)], "--certfile: TLS needs both"),
        (["label-ui", "--data", str(data), "--constitution", "nope"], "no constitution named 'nope'"),
        (["label-ui", "--data", str(data), "--host", "0.0.0.0", "--allow-remote", "--tokens", str(toks)],
         "--certfile: a non-loopback host sends tokens"),
        (["labels", "export", "--data", str(data), "--db", str(notes), "--out", str(tmp_path / "o")],
         "notes.txt: --db: not a label store"),
    ]
    for args, needle in cases:
        r = run_cai(*args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (args, r.stderr)
    assert notes.read_text() == "my notes\n" and not (tmp_path / "o").exists()


def test_static_files_refuse_raw_traversal_paths(tmp_path):
    """httpx/TestClient normalise `/static/../server.py` to `/server.py` before sending it, so only a raw
    request line tests the whitelist: http.client sends the path byte for byte. Control: the same connection
    gets app.js itself, and a path that is not a traversal, but also not whitelisted, is refused too."""
    import http.client
    from pathlib import Path

    import cai.labelui.server as server
    source = Path(server.__file__).read_bytes()
    data = make_critique_dataset(tmp_path / "c", 2)
    proc, url = start_server(data, "--db", str(tmp_path / "l.sqlite"))
    try:
        host, port = url.removeprefix("http://").split(":")

        def raw_get(path: str) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, r.read()
            finally:
                conn.close()

        status, body = raw_get("/static/app.js")
        assert status == 200 and body == (Path(server.__file__).parent / "static" / "app.js").read_bytes()
        for path in ("/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e%2fserver.py",
                     "/static/%2e%2e/server.py", "/static/..%5cserver.py", "/static/....//server.py",
                     "/static/app.js/../../server.py", "/static/../../../pyproject.toml", "/static/server.py",
                     "/static/index.html%00.js"):
            status, body = raw_get(path)
            assert status == 404, (path, status)
            assert b"def create_app" not in body and source[:200] not in body, path
    finally:
        proc.kill()
        proc.wait()

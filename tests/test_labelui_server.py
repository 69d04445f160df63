"""The label server's contract without a browser: durability under SIGKILL, request validation (a malformed
POST is a 4xx and writes nothing), binding and token rules, stale labels, and the AI label hidden from
`/api/next`."""
import os
import signal
import sqlite3

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
                                  allow_remote=True, tokens=str(toks)))
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

"""The labelling page in a real browser: Debian's Chromium, headless, driven by Playwright.

`cai label-ui` runs as a subprocess on a free port of 127.0.0.1 over a `cai rlaif`-shaped dataset whose first
pair holds `<script>`, an `<img onerror>` and other HTML. An annotator signs in, labels 5 pairs with clicks
and with keys (A, B, T, S, Enter), the SQLite rows are checked, the page is reloaded (progress kept), and a
screenshot is saved. Nothing is skipped: without chromium or playwright this test fails.
"""
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from cai.labelui.fixtures import make_critique_dataset, make_rlaif_dataset, start_server
from cai.labelui.pairs import display_order, load_pairs

CHROMIUM = "/usr/bin/chromium"
XSS = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
       '<b>bold?</b> <a href="javascript:window.__pwned=3">link</a> & &amp; "quotes"')
ARTIFACTS = Path(os.environ.get("CAI_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "cai-test-artifacts"))


def _launch(p):
    assert Path(CHROMIUM).is_file(), "Chromium is missing: `apt-get install -y chromium` (scripts/setup.sh does it)"
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT pair_id, annotator, choice, shown_left, note FROM labels ORDER BY id").fetchall()


def test_label_five_pairs_in_chromium(tmp_path):
    data = make_rlaif_dataset(tmp_path / "data", 6, texts={0: (XSS, "A plain, safe answer.")}, unlabelled=1)
    db = tmp_path / "labels.sqlite"
    pairs = load_pairs(data)
    proc, url = start_server(data, "--db", str(db))
    dialogs, errors = [], []
    try:
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            # 1. sign in by name
            page.fill("#login-name", "alice")
            page.press("#login-name", "Enter")
            expect(page.locator("#progress")).to_have_text("0 / 7 answered (0 labelled, 0 skipped)")
            # 2. the hostile pair: shown as text, nothing runs, no element is created from it
            left, right = display_order("alice", pairs[0].id)
            xss_side = "#left-text" if left == "a" else "#right-text"
            expect(page.locator(xss_side)).to_have_text(XSS)
            assert page.locator(f"{xss_side} *").count() == 0  # no <script>, <img>, <b> or <a> elements
            assert page.evaluate("window.__pwned") is None and dialogs == []
            # the AI's label and principle stay hidden until the annotator answers
            expect(page.locator("#reveal")).to_be_hidden()
            assert "least-harmful" not in page.content()
            page.screenshot(path=str(tmp_path / "escaped.png"), full_page=True)
            page.click("#choose-left")  # 1: click
            expect(page.locator("#reveal")).to_be_visible()
            expect(page.locator("#reveal-principles")).to_contain_text("least-harmful: Which of these")
            ai_side = "A" if display_order("alice", pairs[0].id)[0] == pairs[0].ai_choice else "B"
            expect(page.locator("#reveal-ai")).to_have_text(f"The AI judge preferred {ai_side} with p = 0.80.")
            page.keyboard.press("Enter")
            # 3. four more: a key, a click, a key (skip), and a note then a key
            expect(page.locator("#reveal")).to_be_hidden()
            page.keyboard.press("b")  # 2
            expect(page.locator("#reveal")).to_be_visible()
            page.click("#next")
            expect(page.locator("#reveal")).to_be_hidden()
            page.click("#choose-tie")  # 3
            expect(page.locator("#reveal")).to_be_visible()
            page.keyboard.press("n")
            expect(page.locator("#reveal")).to_be_hidden()
            page.keyboard.press("s")  # 4: skip
            expect(page.locator("#reveal-you")).to_have_text("Saved: skip.")
            page.keyboard.press("Enter")
            expect(page.locator("#reveal")).to_be_hidden()
            page.click("#note")
            page.keyboard.type("a is clearer")  # typing "a" inside the note must not answer
            expect(page.locator("#reveal")).to_be_hidden()
            page.keyboard.press("Escape")
            page.keyboard.press("a")  # 5
            expect(page.locator("#reveal")).to_be_visible()
            expect(page.locator("#progress")).to_have_text("5 / 7 answered (4 labelled, 1 skipped)")
            shot = tmp_path / "labelui.png"
            page.screenshot(path=str(shot), full_page=True)
            # 4. the rows: committed, canonical (left/right mapped back to a/b), with the note
            rows = _rows(db)
            assert [r[0] for r in rows] == [q.id for q in pairs[:5]] and {r[1] for r in rows} == {"alice"}
            shown = [display_order("alice", q.id)[0] for q in pairs[:5]]
            other = {"a": "b", "b": "a"}
            assert [r[2] for r in rows] == [shown[0], other[shown[1]], "tie", "skip", shown[4]]
            assert [r[3] for r in rows] == shown and rows[4][4] == "a is clearer" and rows[0][4] == ""
            # 5. reload: progress kept, the sixth pair is next, still in this annotator's order
            page.reload()
            expect(page.locator("#progress")).to_have_text("5 / 7 answered (4 labelled, 1 skipped)")
            left5 = pairs[5].a if display_order("alice", pairs[5].id)[0] == "a" else pairs[5].b
            expect(page.locator("#left-text")).to_have_text(left5)
            assert page.evaluate("window.__pwned") is None and dialogs == [] and errors == []
            browser.close()
    finally:
        proc.kill()
        proc.wait()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "labelui.png")
    shutil.copy(tmp_path / "escaped.png", ARTIFACTS / "labelui-escaped.png")
    print(f"screenshots: {ARTIFACTS / 'labelui.png'}, {ARTIFACTS / 'labelui-escaped.png'}")
    assert shot.stat().st_size > 20_000


def test_token_sign_in_and_trace_viewer_in_chromium(tmp_path):
    data = make_critique_dataset(tmp_path / "crit", 2, rounds=2)
    (tmp_path / "tokens").write_text("carol 7f3a9c0e5b2d4a61c8e0\n")
    proc, url = start_server(data, "--db", str(tmp_path / "l.sqlite"), "--tokens", str(tmp_path / "tokens"))
    try:
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            # an annotator opens the link they were given; the token leaves the address bar at once
            page.goto(url + "/?token=7f3a9c0e5b2d4a61c8e0")
            expect(page.locator("#who")).to_have_text("annotator: carol")
            assert "token" not in page.url
            expect(page.locator("#left-text")).to_have_text(
                "Revision 2 of conversation 0." if display_order("carol", "c0")[0] == "a" else "Initial answer 0.")
            page.click("a[href='/traces']")
            expect(page.locator("#count")).to_have_text("2 conversations")
            page.click("#trace-list li >> nth=1")
            expect(page.locator("#trace-init")).to_have_text("Initial answer 1.")
            rounds = page.locator(".trace-round")
            expect(rounds).to_have_count(2)
            expect(rounds.nth(0)).to_contain_text("Round 1: principle harm-general")
            expect(rounds.nth(1)).to_contain_text("Critique 2 of conversation 1.")
            expect(rounds.nth(1)).to_contain_text("Revision 2 of conversation 1.")
            page.screenshot(path=str(tmp_path / "traces.png"), full_page=True)
            browser.close()
    finally:
        proc.kill()
        proc.wait()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "traces.png", ARTIFACTS / "labelui-traces.png")
    print(f"screenshot: {ARTIFACTS / 'labelui-traces.png'}")

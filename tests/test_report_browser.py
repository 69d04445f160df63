"""The report in a real browser: Debian's Chromium, headless, driven by Playwright, opens the report.html of
a contrast -> DPO -> eval run and a screenshot is saved. The sections are those of the run's kind (openings
before and after, training curves, no reward-versus-length plot for pairs labelled by construction), every
embedded figure decodes, and model text containing a script runs nothing. Without chromium this test fails.
"""
import json
import shutil

from playwright.sync_api import sync_playwright

from cai.report import write_report
from tests.test_labelui_browser import ARTIFACTS, _launch
from tests.test_report import make_contrast_run


def test_report_in_chromium(tmp_path):
    run = make_contrast_run(tmp_path)
    dpo = run / "stages" / "dpo-ccc"
    dpo.mkdir()
    (dpo / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.69 - 0.05 * s, "kl": 0.01 * s}) + "\n"
                                               for s in range(1, 9)))
    record = json.loads((run / "pipeline.json").read_text())
    record["stages"] = {**record["stages"], "dpo": {"kind": "train.dpo", "key": "ccc", "out": str(dpo),
                                                    "status": "done", "seconds": 3.0, "inputs": {}}}
    (run / "pipeline.json").write_text(json.dumps(record))
    html = write_report(run)["html"]
    shot = tmp_path / "report.png"
    dialogs = []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(html.as_uri())
            headings = page.locator("h2").all_inner_texts()
            first_row = page.locator("h3:has-text('benign') + table tr").nth(1).locator("td").all_inner_texts()
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth])")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert headings == ["Stages", "Evaluation", "Most common openings", "Training curves", "Per principle",
                        "Data yield", "Examples", "Config and provenance"]
    assert first_row == ["1", "python lists reverse with slicing", "2", "sure i can help with that is there", "3"]
    assert len(images) == 1 and images[0][0] == "train:dpo" and images[0][1] > 100  # the curves, decoded
    assert dialogs == []  # the answers' <script>alert(...)</script> is text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")
    print(f"screenshot: {ARTIFACTS / 'report.png'}")

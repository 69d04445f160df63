"""Agreement statistics and the human+AI export, on hand-computed numbers.

The fixture: a `cai rlaif`-shaped dataset of 6 pairs with p(a better) = 0.15, 0.35, 0.45, 0.55, 0.75, 0.95
(AI chooses b, b, b, a, a, a with p_chosen 0.85, 0.65, 0.55, 0.55, 0.75, 0.95; principles least-harmful,
harmless-ethical, hhh, repeating), and these human votes (canonical a/b; "-" = no label, skip = no vote):

    pair      0     1     2     3     4     5
    ann       b     a     tie   a     a     a
    bob       b     a     b     skip  a     b
    cat       a     a     -     -     tie   -
    majority  b     a     none  a     a     none
    AI        b     b     b     a     a     a
"""
import json

import pytest
from conftest import run_cai

from cai.errors import InputError
from cai.evaluate.agreement import AgreementConfig, calibration_bins, cohen_kappa, eval_agreement
from cai.labelui.export import ExportConfig, export_labels
from cai.labelui.fixtures import make_rlaif_dataset
from cai.labelui.pairs import load_pairs
from cai.labelui.store import LabelStore
from cai.labelui.votes import human_p_a, majority

P_AB = [0.15, 0.35, 0.45, 0.55, 0.75, 0.95]
VOTES = {"ann": ["b", "a", "tie", "a", "a", "a"], "bob": ["b", "a", "b", "skip", "a", "b"],
         "cat": ["a", "a", None, None, "tie", None]}


@pytest.fixture
def labelled(tmp_path):
    data = make_rlaif_dataset(tmp_path / "rlaif", 6, p_ab=P_AB)
    pairs = load_pairs(data)
    store = LabelStore(data / "human_labels.sqlite")  # the default location
    for who, choices in VOTES.items():
        for pair, choice in zip(pairs, choices):
            if choice:
                store.add(pair_id=pair.id, pair_hash=pair.hash, annotator=who, choice=choice, shown_left="a")
    store.add(pair_id="p0:0-1", pair_hash="0" * 16, annotator="dan", choice="a", shown_left="a")  # stale
    store.add(pair_id="p1:0-1", pair_hash=pairs[1].hash, annotator="cat", choice="b", shown_left="a")
    store.add(pair_id="p1:0-1", pair_hash=pairs[1].hash, annotator="cat", choice="a", shown_left="a",
              note="changed my mind")  # the latest answer counts
    store.close()
    return data


def test_pure_functions_hand_computed():
    # kappa: p_o = 3/4, p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2 -> (3/4 - 1/2) / (1/2) = 1/2
    assert cohen_kappa(list("aabb"), list("abbb")) == pytest.approx(0.5)
    assert cohen_kappa(list("ab"), list("ab")) == pytest.approx(1.0)
    assert cohen_kappa(list("ab"), list("ba")) == pytest.approx(-1.0)  # p_o = 0, p_e = 1/2
    assert cohen_kappa(list("aa"), list("aa")) is None and cohen_kappa([], []) is None  # undefined
    # majority: strict plurality, shared top -> None
    from collections import Counter
    assert majority(Counter("aab")) == "a" and majority(Counter("ab")) is None
    assert majority(Counter(["tie", "tie", "a"])) == "tie" and majority(Counter()) is None
    assert human_p_a(Counter("aab")) == pytest.approx(2 / 3) and human_p_a(Counter(["a", "tie"])) == 0.75
    # calibration: 0.55 -> bin 0, 0.65 -> bin 1, 0.95 -> bin 4; ECE = (0.45 + 0.65 + 0.05) / 3
    cal = calibration_bins([(0.55, 1.0), (0.65, 0.0), (0.95, 1.0)], bins=5)
    assert [b["n"] for b in cal["bins"]] == [1, 1, 0, 0, 1]
    assert cal["bins"][0]["lo"] == 0.5 and cal["bins"][4]["hi"] == 1.0 and cal["bins"][2]["mean_p"] is None
    assert cal["ece"] == pytest.approx(1.15 / 3)
    assert calibration_bins([(1.0, 1.0), (0.6, 0.5)], bins=5)["bins"][4]["n"] == 1  # p = 1 in the last bin
    assert calibration_bins([(0.6, 0.5)], bins=5)["bins"][1]["n"] == 1  # edges are half-open [lo, hi)


def test_agreement_report_on_hand_computed_labels(labelled, tmp_path):
    r = run_cai("eval", "agreement", "--data", str(labelled), "--out", str(tmp_path / "agr"), check=True)
    assert "overall" in r.stdout and "least-harmful" in r.stdout
    rep = json.loads((tmp_path / "agr" / "agreement.json").read_text())
    o = rep["overall"]
    assert rep["stale_labels"] == 1 and o["pairs"] == 6 and o["human_labelled"] == 6
    # accuracy on pairs 0, 1, 3, 4 (majority a or b): AI right on 0, 3, 4
    assert o["accuracy_n"] == 4 and o["ai_accuracy"] == pytest.approx(3 / 4)
    # human majority vs AI on those pairs: maj b a a a, AI b b a a -> p_o 3/4, p_e (3*2 + 1*2)/16 = 1/2 -> 0.5
    assert o["kappa_human_ai"] == pytest.approx(0.5)
    # annotators: ann/bob on pairs 0 1 2 4 5: b a tie a a vs b a b a b -> p_o 3/5, p_e (1*3 + 3*2)/25 = 9/25
    #   -> (0.6 - 0.36) / 0.64 = 0.375; ann/cat and bob/cat on pairs 0 1 4: b a a vs a a tie
    #   -> p_o 1/3, p_e 4/9 -> -0.2; Light's mean (0.375 - 0.2 - 0.2) / 3
    ks = {tuple(p["annotators"]): p for p in o["kappa_annotators"]["pairs"]}
    assert ks[("ann", "bob")]["kappa"] == pytest.approx(0.375) and ks[("ann", "bob")]["n"] == 5
    assert ks[("ann", "cat")]["kappa"] == pytest.approx(-0.2) and ks[("bob", "cat")]["kappa"] == pytest.approx(-0.2)
    assert o["kappa_annotators"]["mean"] == pytest.approx(-0.025 / 3)
    # calibration: (p_chosen, human rate for the AI's choice) = (.85, 2/3) (.65, 0) (.55, .75) (.55, 1)
    #   (.75, 5/6) (.95, .5); ECE = (2|.55 - .875| + .65 + |.75 - 5/6| + |.85 - 2/3| + .45) / 6
    cal = o["calibration"]
    assert [b["n"] for b in cal["bins"]] == [2, 1, 1, 1, 1]
    assert cal["bins"][0]["human_rate"] == pytest.approx(0.875) and cal["bins"][0]["mean_p"] == pytest.approx(0.55)
    assert cal["ece"] == pytest.approx((0.65 + 0.65 + 1 / 12 + 0.85 - 2 / 3 + 0.45) / 6)
    # per principle: least-harmful = pairs 0, 3 (both right); harmless-ethical = 1 (wrong), 4 (right); hhh none
    pp = rep["per_principle"]
    assert pp["least-harmful"]["ai_accuracy"] == 1.0 and pp["harmless-ethical"]["ai_accuracy"] == 0.5
    assert pp["hhh"]["ai_accuracy"] is None and pp["hhh"]["accuracy_n"] == 0
    assert (tmp_path / "agr" / "calibration.png").stat().st_size > 10_000
    with pytest.raises(InputError, match="no human labels"):
        eval_agreement(AgreementConfig(data=str(labelled), db=str(tmp_path / "missing.sqlite")))


def test_export_policies_and_training_on_the_export(labelled, tmp_path, tiny_model):
    import datasets
    out = tmp_path / "exp"
    # human-overrides (default): humans decide pairs 0-4 except pair 5, an even split (left out)
    m = export_labels(ExportConfig(data=str(labelled), out=str(out)))
    assert m["sources"] == {"human": 5, "left_out_human_tie": 1} and m["stale_labels"] == 1
    ds = datasets.load_dataset(str(out), "prefs", split="train")
    rows = {r["id"]: r for r in ds}
    assert list(rows) == ["p0:0-1", "p1:0-1", "p2:0-1", "p3:0-1", "p4:0-1"]
    r0 = rows["p0:0-1"]  # votes b b a: b chosen with 2/3; the AI put 0.85 on b
    assert r0["chosen"][0]["content"].startswith("Response two") and r0["p_chosen"] == pytest.approx(2 / 3)
    assert r0["human_p_chosen"] == pytest.approx(2 / 3) and r0["ai_p_chosen"] == pytest.approx(0.85)
    assert r0["human_votes"] == 3 and r0["human_annotators"] == ["ann", "bob", "cat"]
    r1 = rows["p1:0-1"]  # humans a a a overrule the AI's b: a chosen, the AI gave it only 0.35
    assert r1["chosen"][0]["content"].startswith("Response one") and r1["p_chosen"] == 1.0
    assert r1["ai_p_chosen"] == pytest.approx(0.35) and r1["human_notes"] == ["cat: changed my mind"]
    assert rows["p2:0-1"]["p_chosen"] == pytest.approx(0.75) and rows["p3:0-1"]["human_votes"] == 1
    assert r0["constitution_hash"] == "c0ffee" and r0["prompt"][0]["role"] == "user"
    # the other policies
    m = export_labels(ExportConfig(data=str(labelled), out=str(tmp_path / "ai"), policy="ai"))
    ai = datasets.load_dataset(str(tmp_path / "ai"), "prefs", split="train")
    assert m["sources"] == {"ai": 6} and ai["p_chosen"] == pytest.approx([0.85, 0.65, 0.55, 0.55, 0.75, 0.95])
    m = export_labels(ExportConfig(data=str(labelled), out=str(tmp_path / "both"), policy="both"))
    both = datasets.load_dataset(str(tmp_path / "both"), "prefs", split="train")
    assert m["sources"] == {"both": 6}
    assert both[0]["p_chosen"] == pytest.approx((2 / 3 + 0.85) / 2)  # pair 0: b by both
    assert both[5]["p_chosen"] == pytest.approx((0.5 + 0.95) / 2)  # pair 5: humans split, AI a
    with pytest.raises(InputError, match="policy"):
        ExportConfig(data=str(labelled), out=str(tmp_path / "x"), policy="humans")
    with pytest.raises(InputError, match="must not replace"):
        ExportConfig(data=str(labelled), out=str(labelled))
    r = run_cai("labels", "export", "--data", str(labelled), "--out", str(tmp_path / "cli"), "--policy", "human")
    assert r.returncode == 0 and "human" in r.stderr, r.stderr
    r = run_cai("labels", "export", "--data", str(labelled), "--out", str(tmp_path / "cli"), "--policy", "ai")
    assert r.returncode == 2 and "different configuration" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # into training: the trainers' reader accepts it, and RM and DPO each take a step on it
    from cai.train import DataConfig, DPOConfig, RMConfig, RunConfig, train_dpo, train_rm
    from cai.train.data import check_columns, read_split
    rr = read_split(str(out), "prefs")
    check_columns(rr, ("prompt", "chosen", "rejected"))
    assert len(rr.rows) == 5
    tiny = str(tiny_model)
    run = {"batch_size": 2, "micro_batch_size": 2, "progress": False, "save_every": 0, "max_steps": 1}
    rm_out = train_rm(RMConfig(model=tiny, data=DataConfig(path=str(out), eval_fraction=0.0),
                               run=RunConfig(output_dir=str(tmp_path / "rm"), **run)))
    dpo_out = train_dpo(DPOConfig(model=tiny, data=DataConfig(path=str(out), eval_fraction=0.0),
                                  run=RunConfig(output_dir=str(tmp_path / "dpo"), **run),
                                  ref_cache_dir=str(tmp_path / "ref")))
    for o in (rm_out, dpo_out):
        steps = [json.loads(x) for x in (o / "metrics.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps if "loss" in s] == [1]

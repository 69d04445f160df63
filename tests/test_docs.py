"""The README and docs/ stay true to the code: every relative link (and its #anchor) resolves, every `--flag`
quoted on a `cai ...` command line exists in that command's parser, and the README stays a short guide."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cai.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
CAI = re.compile(r"(?:^|[\s(])(?:\S*/)?cai\s+(.*)$")  # `cai ...`, `.venv/bin/cai ...`, `python -m cai ...`
SHELL_END = re.compile(r"\s(?:&&|\|\||\||;|>|2>|<)\s|\s#\s|\s#$")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*|_(?=\w)|(?<=\w)_", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(page: Path) -> set[str]:
    body = FENCE.sub("", page.read_text(encoding="utf-8"))
    out, seen = set(), {}
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", body, re.M):
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def test_slug_matches_github():
    assert slug("The quickstart's figures") == "the-quickstarts-figures"
    assert slug("Pipelines and the report (`cai run`)") == "pipelines-and-the-report-cai-run"
    assert slug("vLLM on CPU") == "vllm-on-cpu"
    assert slug("PPO and RLOO") == "ppo-and-rloo"


def relative_links(page: Path) -> list[str]:
    body = FENCE.sub("", page.read_text(encoding="utf-8"))
    body = INLINE.sub("", body)
    return [t for t in LINK.findall(body) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_exist(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == []


def commands(page: Path) -> list[str]:
    """Every `cai ...` command line quoted in code blocks and inline code, shell continuations joined."""
    text = page.read_text(encoding="utf-8")
    lines = []
    for block in FENCE.findall(text):
        body = re.sub(r"\\\n\s*", " ", "\n".join(block.splitlines()[1:-1]))
        lines += [ln.removeprefix("$ ") for ln in body.splitlines() if not ln.lstrip().startswith("#")]  # comments show output
    lines += [m.replace("\\|", "|") for m in INLINE.findall(FENCE.sub("", text))]
    out = []
    for ln in lines:
        m = CAI.search(ln)
        if m:
            out.append(" ".join(SHELL_END.split(" " + m.group(1) + " ")[0].split()))
    return out


def _leaves(parser, words: list[str]):
    """The parsers a command line reaches (an `a|b` word reaches both), and the words past the subcommands."""
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    if not subs or not words or words[0].startswith("-"):
        return [parser]
    alternatives = words[0].split("|")
    found = [subs[0].choices[w] for w in alternatives if w in subs[0].choices]
    if not found:
        raise AssertionError(f"unknown command {words[0]!r} (choices: {', '.join(subs[0].choices)})")
    return [leaf for p in found for leaf in _leaves(p, words[1:])]


def flags_of(command: str) -> list[str]:
    words = shlex.split(command.replace("[", " ").replace("]", " ").replace("...", " "), posix=True)
    return sorted({w.split("=", 1)[0] for w in words if re.match(r"^--[a-z]", w)})


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_quoted_cai_commands_and_flags_exist(page):
    parser, missing = build_parser(), []
    for cmd in commands(page):
        words = shlex.split(cmd.replace("[", " ").replace("]", " "), posix=True)
        if not words or words[0] in ("...", "COMMAND") or any(w.endswith(":") for w in words[:3]):
            continue  # a placeholder, or output quoted ("cai train dpo: 2 processes, FSDP (gloo)")
        try:
            leaves = _leaves(parser, words)
        except AssertionError as e:
            missing.append(f"{cmd}: {e}")
            continue
        for flag in flags_of(cmd):
            for leaf in leaves:
                if flag not in leaf._option_string_actions:
                    missing.append(f"{cmd}: {leaf.prog} has no {flag}")
    assert missing == []


def test_flag_check_catches_a_wrong_flag(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("Run `cai train sft|dpo --config x.yaml --resum` or\n\n```bash\n.venv/bin/cai run a.yaml \\\n"
                    "    --plann  # comment --not-a-flag\ncai nosuch --x\n```\n")
    assert commands(page) == ["run a.yaml --plann", "nosuch --x", "train sft|dpo --config x.yaml --resum"]
    assert flags_of(commands(page)[2]) == ["--config", "--resum"]
    parser = build_parser()
    assert [lp.prog for lp in _leaves(parser, ["train", "sft|dpo"])] == ["cai train sft", "cai train dpo"]
    assert "--resum" not in _leaves(parser, ["train", "sft"])[0]._option_string_actions


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    text = "\n".join(lines)
    # the two commands CI and new users run, exactly
    assert "bash scripts/setup.sh && .venv/bin/cai run configs/quickstart.yaml" in text
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in text
    # no measurement history in the guide or the manual
    for page in PAGES:
        for phrase in ("this sitting", "this session", "last session", "before these changes", "(issue "):
            assert phrase not in page.read_text(encoding="utf-8").lower(), (page.name, phrase)

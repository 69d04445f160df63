"""Import constitutions from the two public formats they already exist in, as cai YAML.

- `anthropic-paper`: the prompt folder released with Bai et al. 2022: `CritiqueRevisionInstructions.json`,
  `RLMadisonInstructions.json`, and few-shot files in raw `Human:`/`Assistant:` form with
  `CritiqueRequest:`/`Critique:`/`RevisionRequest:`/`Revision:` markers, which become chat turns
  (the raw form does not transfer to chat templates).
- `hf-recipe`: Hugging Face's CAI recipe JSON, `{constitutions: [{critic, revision}], system_chat: [[messages]]}`.

Each importer returns a plain dict in the cai schema; `write_yaml` makes it readable.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cai.errors import InputError
from cai.yamlio import read_text

MAX_JSON_BYTES = 16 * 1024 * 1024


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path, MAX_JSON_BYTES))
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg}", file=path, line=e.lineno, col=e.colno) from None


def _expect(cond: bool, msg: str, file: Path, field: str) -> None:
    if not cond:
        raise InputError(msg, file=file, field=field)


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.")
    return s or "imported"


# --- anthropic-paper -----------------------------------------------------------------------------

_MARKERS = {"Human": "user", "Assistant": "assistant", "CritiqueRequest": "user", "Critique": "assistant",
            "RevisionRequest": "user", "Revision": "assistant"}
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|CritiqueRequest|Critique|RevisionRequest|Revision):[ \t]?")


def transcript_to_messages(text: str) -> list[dict]:
    """`\\n\\nHuman: ...\\n\\nAssistant: ...` (with critique markers) as chat turns; empty turns dropped."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError(f"text before the first turn marker: {parts[0].strip()[:60]!r}")
    msgs = []
    for marker, content in zip(parts[1::2], parts[2::2]):
        content = content.strip()
        if content:
            msgs.append({"role": _MARKERS[marker], "content": content})
    return msgs


def _strip_marker(text: str, marker: str, tail: str) -> str:
    text = text.strip()
    text = text.removeprefix(f"{marker}:").strip()
    return text.removesuffix(f"{tail}:").strip()


def _precog_example(text: str) -> dict:
    """A chain-of-thought comparison example: H:/A: conversation, (A)/(B) options, rationale, answer."""
    conv_m = re.search(r"conversation between [^\n]*?:\s*\n\n(.*?)\n\n\{\}", text, re.DOTALL)
    opts = re.findall(r"\(([AB])\) \[\[\[(.*?)\]\]\]", text, re.DOTALL)
    why = re.search(r"Let's think step by step:\s*(.*?)\n\nHuman:", text, re.DOTALL)
    ans = re.search(r"So the answer is: \(([AB])\)\s*$", text)
    if not (conv_m and len(opts) == 2 and why and ans):
        raise ValueError("not in the expected 'Consider the following conversation ... (A) [[[...]]]' form")
    turns = re.split(r"(?:^|\n\n)(H|A):\s*", conv_m.group(1))
    prompt = [{"role": "user" if r == "H" else "assistant", "content": t.strip()}
              for r, t in zip(turns[1::2], turns[2::2])]
    return {"prompt": prompt, "response_a": opts[0][1].strip(), "response_b": opts[1][1].strip(),
            "answer": ans.group(1), "rationale": why.group(1).strip()}


def import_anthropic_paper(src: Path, name: str | None = None) -> dict:
    src = Path(src)
    if not src.is_dir():
        raise InputError("expected the paper's prompts/ directory", file=src)
    crit_file, cmp_file = src / "CritiqueRevisionInstructions.json", src / "RLMadisonInstructions.json"
    if not crit_file.is_file() and not cmp_file.is_file():
        raise InputError("found neither CritiqueRevisionInstructions.json nor RLMadisonInstructions.json", file=src)

    critiques = []
    if crit_file.is_file():
        data = _read_json(crit_file)
        _expect(isinstance(data, dict), "expected an object of {id: {prompt, edit_request}}", crit_file, "<root>")
        for pid, entry in data.items():
            _expect(isinstance(entry, dict) and isinstance(entry.get("prompt"), list)
                    and isinstance(entry.get("edit_request"), str),
                    "expected {prompt: [str], edit_request: str}", crit_file, pid)
            revision = _strip_marker(entry["edit_request"], "RevisionRequest", "Revision")
            for j, prompt in enumerate(entry["prompt"]):
                _expect(isinstance(prompt, str), "expected a string", crit_file, f"{pid}.prompt[{j}]")
                critiques.append({"id": _slug(pid if len(entry["prompt"]) == 1 else f"{pid}-{j}"),
                                  "critique": _strip_marker(prompt, "CritiqueRequest", "Critique"),
                                  "revision": revision})

    comparisons = []
    if cmp_file.is_file():
        data = _read_json(cmp_file)
        _expect(isinstance(data, list) and all(isinstance(x, str) for x in data), "expected a list of strings",
                cmp_file, "<root>")
        for i, text in enumerate(data):
            # "Options:" introduced the raw-format options; cai's compare template shows its own.
            comparisons.append({"id": f"compare{i}", "instruction": text.strip().removesuffix("Options:").strip()})

    few_critique = []
    f = src / "CritiqueRevisionFewShotPrompts.json"
    if f.is_file():
        data = _read_json(f)
        _expect(isinstance(data, list), "expected a list of transcripts", f, "<root>")
        for i, text in enumerate(data):
            try:
                few_critique.append(transcript_to_messages(text))
            except (ValueError, TypeError) as e:
                raise InputError(str(e), file=f, field=f"[{i}]") from None

    few_compare = []
    f = src / "RLMadisonFewShotPrompts.json"
    if f.is_file():
        data = _read_json(f)
        _expect(isinstance(data, list), "expected a list of {prompt, corrects, incorrects}", f, "<root>")
        for i, ex in enumerate(data):
            _expect(isinstance(ex, dict) and {"prompt", "corrects", "incorrects"} <= set(ex),
                    "expected {prompt, corrects, incorrects}", f, f"[{i}]")
            prompt = transcript_to_messages(ex["prompt"])
            for good in ex["corrects"]:
                for bad in ex["incorrects"]:
                    # Alternate the correct option's position so the examples carry no position bias.
                    first = len(few_compare) % 2 == 0
                    few_compare.append({"prompt": prompt, "response_a": (good if first else bad).strip(),
                                        "response_b": (bad if first else good).strip(),
                                        "answer": "A" if first else "B"})
    f = src / "RLMadisonPrecogFewShotPrompts.json"
    if f.is_file():
        data = _read_json(f)
        _expect(isinstance(data, list), "expected a list of {prompt}", f, "<root>")
        for i, ex in enumerate(data):
            try:
                few_compare.append(_precog_example(ex["prompt"]))
            except (ValueError, TypeError, KeyError) as e:
                raise InputError(str(e), file=f, field=f"[{i}].prompt") from None

    out = {"name": _slug(name or "anthropic_paper"), "version": "1",
           "description": f"Imported from the CAI paper's prompt files in {src.name}/.",
           "critiques": critiques, "comparisons": comparisons}
    fs = {k: v for k, v in (("critique", few_critique), ("comparison", few_compare)) if v}
    if fs:
        out["few_shot"] = fs
    return out


# --- hf-recipe -----------------------------------------------------------------------------------

def import_hf_recipe(src: Path, name: str | None = None) -> dict:
    src = Path(src)
    data = _read_json(src)
    _expect(isinstance(data, dict) and isinstance(data.get("constitutions"), list),
            "expected an object with a 'constitutions' list", src, "constitutions")
    unknown = set(data) - {"constitutions", "system_chat"}
    _expect(not unknown, f"unknown keys {sorted(unknown)}", src, "<root>")
    critiques = []
    for i, entry in enumerate(data["constitutions"]):
        _expect(isinstance(entry, dict) and isinstance(entry.get("critic"), str)
                and isinstance(entry.get("revision"), str), "expected {critic: str, revision: str}",
                src, f"constitutions[{i}]")
        critiques.append({"id": f"c{i:02d}", "critique": entry["critic"].strip(),
                          "revision": entry["revision"].strip()})
    convs = []
    for i, conv in enumerate(data.get("system_chat", [])):
        _expect(isinstance(conv, list) and all(isinstance(m, dict) and set(m) == {"role", "content"} for m in conv),
                "expected a list of {role, content} messages", src, f"system_chat[{i}]")
        convs.append([{"role": m["role"], "content": m["content"].strip()} for m in conv])
    out = {"name": _slug(name or src.stem), "version": "1",
           "description": f"Imported from the Hugging Face CAI recipe file {src.name}.", "critiques": critiques}
    if convs:
        out["few_shot"] = {"critique": convs}
    return out


IMPORTERS: dict[str, Callable[[Path, str | None], dict]] = {
    "anthropic-paper": import_anthropic_paper,
    "hf-recipe": import_hf_recipe,
}


# --- output --------------------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str):
    # Multi-line texts as `|` blocks: diffs of the YAML stay readable, line by line.
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: dict, header: str = "") -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body

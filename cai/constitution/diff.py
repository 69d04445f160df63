"""Compare two resolved constitutions principle by principle, by id and content hash."""
from __future__ import annotations

from cai.constitution.checks import declared_checks
from cai.constitution.hashing import sha256_json
from cai.constitution.schema import Constitution

_OTHER = ("few_shot", "system_prompt", "scoring", "templates", "contrast")


def _diff_list(a: list, b: list) -> dict[str, list[str]]:
    ha, hb = {p.id: _hash(p) for p in a}, {p.id: _hash(p) for p in b}
    return {"added": [i for i in hb if i not in ha], "removed": [i for i in ha if i not in hb],
            "changed": [i for i in hb if i in ha and ha[i] != hb[i]]}


def _hash(x) -> str:
    return x.hash if hasattr(x, "hash") else sha256_json(x.model_dump(mode="json"))


def diff(a: Constitution, b: Constitution) -> dict:
    """Principles and checks (all declared ones, by id) added, removed and changed (same id, new content),
    plus the other sections that differ."""
    ca, cb = a.canonical(), b.canonical()
    other = [k for k in (*_OTHER, "template_files") if ca.get(k) != cb.get(k)]
    return {"a": a.name, "b": b.name, "a_hash": a.hash, "b_hash": b.hash,
            "critiques": _diff_list(a.critiques, b.critiques),
            "comparisons": _diff_list(a.comparisons, b.comparisons),
            "checks": _diff_list([k for _, k in declared_checks(a)], [k for _, k in declared_checks(b)]),
            "other_changes": other}


def format_diff(d: dict) -> str:
    lines = [f"--- {d['a']} {d['a_hash'][:12]}", f"+++ {d['b']} {d['b_hash'][:12]}"]
    for key in ("critiques", "comparisons", "checks"):
        for mark, kind in (("+", "added"), ("-", "removed"), ("~", "changed")):
            lines += [f"{mark} {key}.{pid}" for pid in d[key][kind]]
    lines += [f"~ {k}" for k in d["other_changes"]]
    if d["a_hash"] == d["b_hash"]:
        lines.append("no differences")
    return "\n".join(lines)

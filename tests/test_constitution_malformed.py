"""Every malformed constitution in tests/constitutions/malformed/ fails with one precise line and exit 2.

Each file's first line says what it expects: `# expect: FILE:LINE FIELD :: MESSAGE` (`-` for none).
"""
import re
from pathlib import Path

import pytest

from cai.cli import main

MALFORMED = sorted((Path(__file__).parent / "constitutions" / "malformed").glob("*.yaml"))
_EXPECT = re.compile(r"# expect: (?P<file>[^\s:]+)(?::(?P<line>\d+))? (?P<field>\S+) :: (?P<msg>.*)")


def _expectation(path: Path) -> dict:
    m = _EXPECT.match(path.read_bytes().split(b"\n", 1)[0].decode("ascii"))
    assert m, f"{path.name}: first line must be '# expect: FILE:LINE FIELD :: MESSAGE'"
    return m.groupdict()


def test_enough_cases():
    assert len(MALFORMED) >= 25


def _check(path: Path, want: dict, capsys) -> str:
    rc = main(["constitution", "lint", str(path)])
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2, out
    assert len(lines) == 1, lines
    err = lines[0]
    assert err.startswith("cai: error: ")
    loc = re.escape(want["file"]) + (rf":{want['line']}(:\d+)?: " if want["line"] else ": ")
    assert re.search(rf"(^|[ /]){loc}", err), err
    if want["field"] != "-":
        assert f": {want['field']}: " in err, err
    assert want["msg"] in err, err
    assert "Traceback" not in out.err
    return err


@pytest.mark.parametrize("path", MALFORMED, ids=[p.stem for p in MALFORMED])
def test_malformed(path, capsys):
    _check(path, _expectation(path), capsys)


def test_file_too_large(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nversion: '1'\ndescription: '" + "x" * (2 * 1024 * 1024) + "'\n")
    err = _check(big, {"file": "big.yaml", "line": None, "field": "-", "msg": "file is too large"}, capsys)
    assert "bytes" in err


def test_missing_file(tmp_path, capsys):
    _check(tmp_path / "nope.yaml", {"file": "nope.yaml", "line": None, "field": "-", "msg": "file not found"},
           capsys)


def test_unknown_name(capsys):
    rc = main(["constitution", "show", "no_such_name"])
    err = capsys.readouterr().err
    assert rc == 2 and "no constitution named 'no_such_name'" in err and "harmless" in err

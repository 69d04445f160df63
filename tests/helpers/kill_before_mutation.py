"""Kill -9 a snippet of Python just before each of its file-system mutations in turn, deterministically.

    python kill_before_mutation.py ROOT 'setup' 'action'

For K = 1, 2, ...: run `setup` with `out = ROOT/kK`, then fork; the child counts its file-system
mutations while it runs `action` and SIGKILLs itself just before the K-th. This stops once the action
finishes before its K-th mutation, so the directories ROOT/k1, ROOT/k2, ... hold every state a kill can
leave, in the order the code makes them. Prints a JSON list: each child's fate ("killed" or "finished").

Counted mutations: os.mkdir, os.rename, os.replace, os.unlink, os.remove, os.rmdir, each Parquet file
written (pyarrow.parquet.write_table) and cai's directory exchange (`cai.data.layout._exchange`, where it
exists). Counting calls instead of sleeping makes the kill land at the same point on every machine; one
process imports pyarrow and cai once and forks per K, which keeps the test fast.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path


def install(k: int) -> None:
    seen = [0]

    def counted(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            seen[0] += 1
            if seen[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapper

    for name in ("mkdir", "rename", "replace", "unlink", "remove", "rmdir"):
        setattr(os, name, counted(getattr(os, name)))
    import pyarrow.parquet as pq
    pq.write_table = counted(pq.write_table)
    from cai.data import layout
    if hasattr(layout, "_exchange"):
        layout._exchange = counted(layout._exchange)


def main(root: str, setup: str, action: str, limit: int = 200) -> list[str]:
    import pyarrow.parquet  # noqa: F401 - imported once, before the forks

    import cai.data.layout  # noqa: F401
    fates = []
    for k in range(1, limit + 1):
        out = str(Path(root) / f"k{k}")
        exec(setup, {"out": out})
        pid = os.fork()
        if pid == 0:
            try:
                install(k)
                exec(action, {"out": out})
            except BaseException:  # noqa: BLE001 - a failure is a finding: report it as exit status 1
                import traceback
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            fates.append("killed")
            continue
        fates.append("finished" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else f"failed:{status}")
        break
    return fates


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3])))

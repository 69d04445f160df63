"""One pipeline stage in its own process: `python -m cai.pipeline.child RUN_DIR/.cai/stage-NAME.json`.

The spec holds the stage kind and its config as plain data (`cai.config.to_dict`); the config is rebuilt
with the same loader, so it is validated again and its errors still point into the pipeline YAML.
The result (the stage's summary, or its one-line error) goes to the file the spec names.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from cai import quiet
from cai.config import from_data
from cai.errors import CaiError, InputError
from cai.pipeline.registry import load_kind
from cai.pipeline.run import atomic_json, execute, jsonable
from cai.yamlio import load_yaml


def main(argv: list[str]) -> int:
    quiet.configure()  # `cai run --verbose` reaches this process as CAI_VERBOSE
    spec = json.loads(Path(argv[0]).read_text())
    result = Path(spec["result"])
    try:
        kind = load_kind(spec["kind"])
        try:
            _, marks = load_yaml(spec["file"])
        except InputError:
            marks = {}
        cfg = from_data(kind.config_cls, spec["config"], file=spec["file"], marks=marks,
                        prefix=tuple(spec["prefix"]))
        summary = execute(kind, cfg)
    except CaiError as e:
        print(f"cai: error: {e}", file=sys.stderr)
        atomic_json(result, {"error": str(e)})
        return e.exit_code
    except KeyboardInterrupt:
        atomic_json(result, {"error": "interrupted"})
        return 130
    except Exception as e:  # noqa: BLE001 - an internal error: full traceback here, one line for the pipeline
        traceback.print_exc()
        atomic_json(result, {"error": f"internal error: {type(e).__name__}: {e}"})
        return 1
    atomic_json(result, {"summary": jsonable(summary)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

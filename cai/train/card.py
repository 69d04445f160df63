"""The model card (`OUTPUT/README.md`) of a trained model: the config, the dataset's provenance (manifest
and provenance columns such as constitution_hash), what tokenisation truncated or dropped, and the final
metrics. Plain text with a YAML header that the Hugging Face hub understands."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

STAGE_TITLES = {"sft": "supervised fine-tuning", "rm": "Bradley-Terry reward model", "dpo": "DPO",
                "ppo": "PPO with a KL penalty", "rloo": "RLOO with a KL penalty"}


def write_card(output_dir: str | Path, stage: str, config: dict, base_model: str, provenance: dict,
               counts: dict, final: dict, extra: dict | None = None, base_hash: str | None = None) -> Path:
    out = Path(output_dir) / "README.md"
    header = {"base_model": base_model, "library_name": "transformers",
              "tags": ["cai", stage, "constitutional-ai"],
              "pipeline_tag": "text-classification" if stage == "rm" else "text-generation"}
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {Path(output_dir).name}: {STAGE_TITLES[stage]} with cai", "",
             f"Trained by `cai train {stage}` from `{base_model}`"
             + (f" (weights sha256 `{base_hash}`)." if base_hash else "."), "",
             "## Final metrics", "", "```json", json.dumps(final, indent=2, default=str), "```", ""]
    if extra:
        lines += ["## Notes", "", "```json", json.dumps(extra, indent=2, default=str), "```", ""]
    lines += ["## Data", "", f"Source: `{provenance.get('source')}` ({provenance.get('rows')} rows).", "",
              "Tokenisation (train split): " + ", ".join(f"{k}={v}" for k, v in counts.items()), "",
              "Provenance columns (distinct values, up to 5):", "", "```json",
              json.dumps(provenance.get("columns", {}), indent=2, default=str), "```", ""]
    if provenance.get("manifest") is not None:
        lines += ["Dataset manifest:", "", "```json", json.dumps(provenance["manifest"], indent=2, default=str),
                  "```", ""]
    lines += ["## Training config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    out.write_text("\n".join(lines))
    return out


def read_notes(output_dir: str | Path) -> dict:
    """The "Notes" of a card written by `write_card` (steps, packing, `processes`...), or {} if it has none."""
    text = (Path(output_dir) / "README.md").read_text()
    head, sep, rest = text.partition("## Notes\n\n```json\n")
    return json.loads(rest.split("\n```", 1)[0]) if sep else {}

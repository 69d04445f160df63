"""LoRA through peft: wrap a model with an adapter whose target modules are checked against the model,
and merge an adapter back into its base for export (`cai train ... lora.merge=true`, or `merge_adapter`)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from cai.train.config import LoraConfig, config_error


def module_names(model: nn.Module) -> set[str]:
    """Leaf names of the model's Linear-like modules (what LoRA can target): `q_proj`, `score`..."""
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def check_targets(cfg, model_path: str | Path, task: str = "CAUSAL_LM") -> None:
    """Refuse LoRA target modules absent from the model (a config error with file:line), before any
    weights are loaded: the architecture is instantiated on the meta device."""
    if not cfg.lora.enabled:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    auto = AutoModelForSequenceClassification if task == "SEQ_CLS" else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(AutoConfig.from_pretrained(model_path, num_labels=1))
    have = module_names(model)
    missing = [t for t in cfg.lora.target_modules if t not in have]
    if missing:
        raise config_error(cfg, "lora.target_modules",
                           f"not in the model: {', '.join(missing)} (it has: {', '.join(sorted(have))})")


def apply_lora(model: nn.Module, lora: LoraConfig, cfg, task: str = "CAUSAL_LM", modules_to_save=None):
    """Wrap `model` in a peft LoRA adapter (targets already checked by `check_targets`)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    pc = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type=task,
                        modules_to_save=modules_to_save)
    return get_peft_model(model, pc)


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Load base + adapter from `adapter_dir` (peft layout), merge, and save a plain HF model with the
    tokenizer (when the adapter directory's parent or base has one) to `out_dir`."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir)
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    for src in (Path(adapter_dir), Path(adapter_dir).parent, Path(model.peft_config["default"].base_model_name_or_path)):
        if (src / "tokenizer_config.json").is_file():
            AutoTokenizer.from_pretrained(src).save_pretrained(out_dir)
            break
    return Path(out_dir)

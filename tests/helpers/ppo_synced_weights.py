"""Subprocess helper, one per process under torchrun: `cai.train.ppo.train` with the rollout engine's
`load_weights` recorded; after training, each process writes OUTPUT/synced-RANK.json comparing the weights
its engine served after the last sync with the saved model (the trainer's final full weights).
Usage: python -m torch.distributed.run ... ppo_synced_weights.py KEY=VALUE..."""
import json
import os
import sys

if __name__ == "__main__":
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from cai.train import PPOConfig, load_config, ppo

    served: dict = {}
    make = ppo.make_rollout_engine

    def recording_engine(cfg, model_path):
        eng = make(cfg, model_path)
        load = eng.load_weights

        def load_weights(named_tensors):
            load(named_tensors)
            served.clear()
            served.update({k: v.detach().clone() for k, v in eng.model.state_dict().items()})
        eng.load_weights = load_weights
        return eng

    ppo.make_rollout_engine = recording_engine
    out = ppo.train(load_config(PPOConfig, None, sys.argv[1:]))
    saved = load_file(Path(out) / "model.safetensors")
    diff = max((served[k] - v).abs().max().item() for k, v in saved.items())
    rank = int(os.environ.get("RANK", "0"))
    (Path(out) / f"synced-{rank}.json").write_text(json.dumps(
        {"missing": sorted(set(saved) - set(served)), "max_abs_diff": diff, "tensors": len(saved),
         "shapes_equal": all(served[k].shape == v.shape for k, v in saved.items())}))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

"""Subprocess helper: greedy chat generation on vLLM, printed as JSON (a second vLLM engine cannot
live in the pytest process). Usage: python vllm_greedy.py MODEL_DIR PROMPTS_JSON MAX_TOKENS"""
import json
import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

if __name__ == "__main__":
    from cai.engine.base import SamplingParams
    from cai.engine.vllm_engine import VLLMEngine

    model, prompts, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    engine = VLLMEngine(model, dtype="float32", max_model_len=1024, enforce_eager=True)
    res = engine.chat([[{"role": "user", "content": p}] for p in prompts],
                      SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=True))
    print("JSON" + json.dumps([{"ids": r.outputs[0].token_ids, "lps": r.outputs[0].logprobs,
                               "text": r.outputs[0].text} for r in res]))

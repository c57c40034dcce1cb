"""`python run.py serve` as a user runs it: a real subprocess on a tiny checkpoint, asked over HTTP (aiohttp),
its answers checked against decoding the same prompts in this process."""
import asyncio

import numpy as np
import pytest

from flan_mix.infer import chat, serve
from tests import serving

pytestmark = pytest.mark.timeout(600)

PROMPTS = ["Sort the words alphabetically: pear apple fig", "Which number is larger, 12 or 7?",
           "Translate to French: the cat sleeps."]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("serve") / "tiny")
    serving.make_checkpoint(model_dir)
    with serving.Server(model_dir) as server:
        server.wait_ready()
        yield model_dir, server
        code = server.stop()
        # SIGTERM is a clean shutdown: exit 0, after saying so.
        assert code == 0 and "shutting down" in "".join(server.stdout), server.stderr()[-2000:]


@pytest.fixture(scope="module")
def direct(served):
    """The same checkpoint loaded here: the reference the server's greedy text must equal."""
    import gin
    from flan_mix.infer.loading import load_model
    model_dir, _ = served
    serving.parse_test_gin(model_dir)
    try:
        loaded = load_model(model_dir)
    finally:
        gin.clear_config()
    return loaded


def _direct_greedy(loaded, prompt: str, max_tokens: int) -> tuple[str, list[int]]:
    """Greedy decode through decoding.generate (the path `run.py infer` uses), same shapes as the server."""
    from flan_mix.infer import decoding
    ids = np.asarray(loaded.vocabulary.encode(prompt) + [loaded.vocabulary.eos_id], np.int32)
    text = decoding.generate(loaded.model, loaded.params, [ids], loaded.vocabulary, mesh=loaded.mesh,
                             inputs_length=768, max_decode_len=max_tokens, batch_size=8)[0]
    return text, ids.tolist()


def test_ready_line_health_and_models(served):
    model_dir, server = served
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0/v1")
    assert f"serving {model_dir} on {server.url}" in "".join(server.stdout)
    base = server.url[:-len("/v1")]
    assert serving.get_json(f"{base}/health") == (200, {"status": "ok", "model": "tiny"})
    status, body = serving.get_json(f"{server.url}/models")
    assert status == 200 and body["object"] == "list" and [m["id"] for m in body["data"]] == ["tiny"]


def test_chat_completion_is_openai_shaped_and_matches_direct_greedy(served, direct):
    """The first completion compiles the server's decode for seconds: /health, asked meanwhile, still answers
    (the event loop never decodes)."""
    import aiohttp
    _, server = served

    async def first_with_health():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
            async def ask():
                async with s.post(f"{server.url}/chat/completions", json={
                        "model": "tiny", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 16,
                        "temperature": 0}) as r:
                    return r.status, await r.json()
            task = asyncio.ensure_future(ask())
            await asyncio.sleep(0.3)
            async with s.get(server.url[:-3] + "/health") as r:
                health = r.status
            return health, task.done(), await task
    health, done_at_health, first = asyncio.run(first_with_health())
    assert health == 200 and not done_at_health
    for prompt in PROMPTS:
        status, body = first if prompt == PROMPTS[0] else serving.post_json(f"{server.url}/chat/completions", {
            "model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16,
            "temperature": 0})
        assert status == 200, body
        assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
        assert body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
        (choice,) = body["choices"]
        assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
        expected, prompt_ids = _direct_greedy(direct, prompt, 16)
        assert choice["message"]["content"] == expected
        usage = body["usage"]
        assert usage["prompt_tokens"] == len(prompt_ids)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert 0 < usage["completion_tokens"] <= 16
        assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 16 else "stop")


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served, direct):
    """Conversations of several turns, sent at once with different max_tokens: each reply equals that prompt
    decoded alone (render_chat's text, cut to its own max_tokens)."""
    import aiohttp
    _, server = served
    conversations = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": p}]
                     for p in PROMPTS] + [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                           {"role": "user", "content": "count to three"}]]
    max_tokens = [16, 5, 16, 11]  # one decode bucket (16), so one batch

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
            async def ask(messages, n):
                async with s.post(f"{server.url}/chat/completions",
                                  json={"messages": messages, "max_tokens": n}) as r:
                    return r.status, await r.json()
            return await asyncio.gather(*(ask(m, n) for m, n in zip(conversations, max_tokens)))
    for messages, n, (status, body) in zip(conversations, max_tokens, asyncio.run(go())):
        assert status == 200, body
        full, _ = _direct_greedy(direct, chat.render_chat(messages), 16)
        text = body["choices"][0]["message"]["content"]
        assert full.startswith(text) and body["usage"]["completion_tokens"] <= n
        if n == 16:
            assert text == full


def test_local_oracle_batches_and_matches_direct_greedy(direct):
    """The in-process oracle: conversations decoded in one batch, a prompt too long for the model is that
    conversation's OracleError and the others still answer."""
    from flan_mix.curation.local_oracle import LocalOracle
    from flan_mix.curation.oracle import Oracle, OracleError
    oracle = LocalOracle(direct, name="local:tiny", max_prompt_tokens=768, max_decode_len=32, batch_size=8)
    assert isinstance(oracle, Oracle)
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    replies = oracle.complete_many(conversations[:2] + [[{"role": "user", "content": "word " * 2000}]]
                                   + conversations[2:], max_tokens=16)
    assert [replies[0], replies[1], replies[3]] == [_direct_greedy(direct, p, 16)[0] for p in PROMPTS]
    assert isinstance(replies[2], OracleError) and "more than the 768" in str(replies[2])
    assert oracle.complete(conversations[0], max_tokens=16) == replies[0]


def test_stop_strings_cut_the_reply(served, direct):
    _, server = served
    full, _ = _direct_greedy(direct, PROMPTS[0], 16)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    status, body = serving.post_json(f"{server.url}/chat/completions", {
        "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 16, "stop": [stop, "\u2603"]})
    assert status == 200
    assert body["choices"][0]["message"]["content"] == full[:full.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_sampling_with_a_seed_is_reproducible(served):
    _, server = served
    req = {"messages": [{"role": "user", "content": PROMPTS[1]}], "max_tokens": 16, "temperature": 1.0}
    a = serving.post_json(f"{server.url}/chat/completions", {**req, "seed": 7})[1]
    b = serving.post_json(f"{server.url}/chat/completions", {**req, "seed": 7})[1]
    assert a["choices"][0]["message"] == b["choices"][0]["message"]


@pytest.mark.parametrize("body, field", [
    ("{not json", "body"),
    ([1, 2], "body"),
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}, "seed"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [""]}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-5"}, "model"),
    ({"messages": [{"role": "user", "content": "word " * 2000}]}, "messages"),
])
def test_bad_requests_get_400_naming_the_field(served, body, field):
    _, server = served
    status, reply = serving.post_json(f"{server.url}/chat/completions", body)
    assert status == 400
    assert reply["error"]["param"] == field and reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["message"].startswith(field)


def test_render_chat():
    assert chat.render_chat([{"role": "user", "content": "Add 2 and 3."}]) == "Add 2 and 3."
    assert chat.render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."},
                             {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 4?"}]) == (
        "System: Be brief.\n\nUser: Add 2 and 3.\n\nAssistant: 5\n\nUser: And 4?\n\nAssistant:")


def test_decode_buckets():
    assert [chat.decode_bucket(n, 64) for n in (1, 16, 17, 32, 33, 64)] == [16, 16, 32, 32, 64, 64]
    assert chat.decode_bucket(50, 40) == 40


def test_binding_beyond_loopback_warns(capsys):
    assert not serve.warn_if_exposed("127.0.0.1", 8000)
    assert capsys.readouterr().err == ""
    assert serve.warn_if_exposed("0.0.0.0", 8000)
    err = capsys.readouterr().err
    assert "WARNING: --host=0.0.0.0" in err and "NO authentication" in err


def test_bad_port_is_a_usage_error(tmp_path, capsys):
    from flan_mix import launcher
    assert launcher.run(["serve", "--port=http", f"--gin.MODEL_DIR='{tmp_path}'"]) == 2
    assert "run.py: error: --port=http: expected an integer" in capsys.readouterr().err

"""Reflection-Tuning end to end: the reply parser and the selective rule on hand-written inputs; the pipeline
through HttpOracle against `run.py serve` on a tiny random model (garbage replies: every failure recorded, every
original kept) and against an endpoint that misbehaves on purpose (timeouts, 500s, 429 + Retry-After, garbage
JSON); the API key never leaks; an interrupted run resumes without duplicates."""
import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from flan_mix.curation import http_oracle, reflection
from flan_mix.curation.oracle import OracleError
from flan_mix.curation.reflection import CRITIQUE, NEW_ANSWER, NEW_INSTRUCTION, ReflectionParseError
from tests import serving

pytestmark = pytest.mark.timeout(600)

SECRET = "sk-test-9f8e7d6c5b4a-do-not-leak"


def _records(n: int, doomed: tuple[int, ...] = ()) -> list[dict]:
    return [{"id": f"r{i}", "instruction": f"Task {i}: sort the words{' DOOMED' if i in doomed else ''}",
             "input": f"pear apple fig {i}", "output": f"apple fig pear {i}", "task": "gen_sort_words",
             "ability": "ordering"} for i in range(n)]


def _write(path, records) -> str:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def _read(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


# ----- the parser -----
WELL_FORMED = """Sure, here is my review.
[[CRITIQUE]]
The task is vague about the ordering.
[[NEW INSTRUCTION]]
Sort these words alphabetically and explain the rule: pear apple fig
[[NEW ANSWER]]
apple, fig, pear: ordered by their first letters a < f < p.
"""


def test_parse_reply_reads_well_formed_replies():
    parts = reflection.parse_reply(WELL_FORMED, reflection.INSTRUCTION_SECTIONS)
    assert parts == {CRITIQUE: "The task is vague about the ordering.",
                     NEW_INSTRUCTION: "Sort these words alphabetically and explain the rule: pear apple fig",
                     NEW_ANSWER: "apple, fig, pear: ordered by their first letters a < f < p."}
    # Lower case, extra spaces inside the brackets and a header mid-line are tolerated.
    loose = "[[ critique ]] too short\n[[new   answer]]  A longer answer.\n\n"
    assert reflection.parse_reply(loose, reflection.RESPONSE_SECTIONS) == {CRITIQUE: "too short",
                                                                           NEW_ANSWER: "A longer answer."}


@pytest.mark.parametrize("reply, sections, reason", [
    ("", reflection.RESPONSE_SECTIONS, "empty reply"),
    ("   \n", reflection.RESPONSE_SECTIONS, "empty reply"),
    ("pear apple <extra_id_3> fig", reflection.RESPONSE_SECTIONS, "no [[CRITIQUE]] section"),
    ("[[CRITIQUE]] fine", reflection.RESPONSE_SECTIONS, "no [[NEW ANSWER]] section"),
    ("[[CRITIQUE]] a [[NEW ANSWER]]  \n ", reflection.RESPONSE_SECTIONS, "[[NEW ANSWER]] is empty"),
    ("[[NEW ANSWER]] b [[CRITIQUE]] a", reflection.RESPONSE_SECTIONS, "out of order"),
    ("[[CRITIQUE]] a [[NEW ANSWER]] b [[NEW ANSWER]] c", reflection.RESPONSE_SECTIONS, "appears 2 times"),
    ("[[CRITIQUE]] a [[NEW INSTRUCTION]] x [[NEW ANSWER]] b", reflection.RESPONSE_SECTIONS,
     "unexpected [[NEW INSTRUCTION]]"),
    ("[[CRITIQUE]] a [[NEW ANSWER]] b", reflection.INSTRUCTION_SECTIONS, "no [[NEW INSTRUCTION]] section"),
])
def test_parse_reply_names_what_is_wrong(reply, sections, reason):
    with pytest.raises(ReflectionParseError, match=re.escape(reason)):
        reflection.parse_reply(reply, sections)


def test_an_unparsable_or_failed_reply_keeps_the_original():
    rec = _records(1)[0]
    out = reflection._reflected(rec, "no sections here", "instruction")
    assert out["reflection_error"].startswith("unparsable reply: no [[CRITIQUE]]")
    assert (out["instruction_reflected"], out["input_reflected"], out["output_reflected"]) == (
        rec["instruction"], rec["input"], rec["output"])
    out = reflection._reflected(rec, OracleError("http://x/v1: gave up"), "response")
    assert out["reflection_error"] == "oracle failed: http://x/v1: gave up" and out["output_reflected"] == rec["output"]
    out = reflection._reflected(rec, WELL_FORMED, "instruction")
    assert out["reflection_error"] is None and out["input_reflected"] == ""  # the new instruction is self-contained
    assert out["output_reflected"].startswith("apple, fig, pear")


# ----- the selective rule, hand-worked -----
@pytest.mark.parametrize("scores, choice", [
    # The reflected pair is harder for the student (0.8 > 0.6) and still coherent (< 1): take it.
    (dict(ifd_original=0.6, ifd_reflected_pair=0.8, rifd_original=0.9, rifd_reflected_answer=0.5), "reflected_pair"),
    # Harder but incoherent (IFD 1.2 >= 1: the instruction does not help) -> the answer stage decides: 0.5 < 0.9.
    (dict(ifd_original=0.6, ifd_reflected_pair=1.2, rifd_original=0.9, rifd_reflected_answer=0.5),
     "reflected_answer"),
    # The reflected pair is easier (0.4 < 0.6); the new answer explains the instruction worse (0.95 > 0.9).
    (dict(ifd_original=0.6, ifd_reflected_pair=0.4, rifd_original=0.9, rifd_reflected_answer=0.95), "original"),
    # The original is incoherent for the student (IFD 1.1), the reflected pair is not: take the pair.
    (dict(ifd_original=1.1, ifd_reflected_pair=0.3, rifd_original=0.9, rifd_reflected_answer=0.95),
     "reflected_pair"),
    # Both reflections failed (no scores): the original.
    (dict(ifd_original=0.6, ifd_reflected_pair=None, rifd_original=0.9, rifd_reflected_answer=None), "original"),
    # Equal scores are no improvement.
    (dict(ifd_original=0.6, ifd_reflected_pair=0.6, rifd_original=0.9, rifd_reflected_answer=0.9), "original"),
    # The scorer skipped the original (None): a usable reflected answer wins.
    (dict(ifd_original=None, ifd_reflected_pair=None, rifd_original=None, rifd_reflected_answer=0.7),
     "reflected_answer"),
    (dict(ifd_original=0.5, ifd_reflected_pair=float("nan"), rifd_original=0.9, rifd_reflected_answer=0.2),
     "reflected_answer"),
])
def test_select_version_by_hand(scores, choice):
    got, reason = reflection.select_version(**scores)
    assert got == choice, reason


def test_selective_needs_both_reflections_and_the_ifd_scorer(tmp_path, monkeypatch):
    monkeypatch.setenv(http_oracle.ENV_URL, "http://127.0.0.1:9/v1")
    inp = _write(tmp_path / "in.jsonl", _records(2))
    with pytest.raises(ValueError, match="add --mode=both"):
        reflection.reflect_command(inp, str(tmp_path / "out.jsonl"), mode="instruction", selective="true")
    with pytest.raises(ValueError, match="--selective=maybe: expected true or false"):
        reflection.reflect_command(inp, str(tmp_path / "out.jsonl"), mode="both", selective="maybe")
    if importlib.util.find_spec("flan_mix.curation.ifd") is None:
        # This branch predates IFD scoring: the error says what is missing before any oracle call is made.
        with pytest.raises(ValueError, match=r"flan_mix\.curation\.ifd \(score_ifd, score_reversed_ifd\)"):
            reflection.reflect_command(inp, str(tmp_path / "out.jsonl"), mode="both", selective="true")
        assert not os.path.exists(tmp_path / "out.jsonl")


# ----- an endpoint that misbehaves on purpose -----
def _good_reply(prompt: str) -> str:
    task = re.search(r"<task>\n(.*?)\n</task>", prompt, re.S).group(1)
    if "[[NEW INSTRUCTION]]" in prompt:
        return (f"[[CRITIQUE]]\nToo terse.\n[[NEW INSTRUCTION]]\nExplain step by step: {task}\n"
                f"[[NEW ANSWER]]\nA careful answer to: {task}")
    return f"[[CRITIQUE]]\nThe reply is thin.\n[[NEW ANSWER]]\nA fuller reply to: {task}"


class FaultyEndpoint:
    """/{scenario}/v1/...: 'flaky' walks each conversation through 500 (echoing the Authorization header, as a
    careless proxy might), 429 with Retry-After: 1, a 200 that is not JSON, a reply slower than the client's
    timeout, then a good reply -- except tasks marked DOOMED, which always get 503. 'slow' answers well after
    0.4 s; 'refuse' answers 400."""

    def __init__(self):
        from aiohttp import web
        self.attempts: dict[str, list[tuple[float, str]]] = {}
        self.auth_seen: set[str] = set()
        app = web.Application()
        app.router.add_get("/{scenario}/v1/models", self.models)
        app.router.add_post("/{scenario}/v1/chat/completions", self.chat)
        self.app = app

    async def models(self, request):
        from aiohttp import web
        return web.json_response({"object": "list", "data": [{"id": "fault-model", "object": "model"}]})

    async def chat(self, request):
        from aiohttp import web
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        auth = request.headers.get("Authorization", "")
        self.auth_seen.add(auth)
        key = re.search(r"<task>\n(.*?)\n</task>", prompt, re.S).group(1) + ("/i" if "NEW INSTRUCTION" in prompt else "/r")
        tries = self.attempts.setdefault(key, [])
        scenario = request.match_info["scenario"]
        step = len(tries)
        ok = web.json_response({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                     "content": _good_reply(prompt)}}]})
        if scenario == "refuse":
            tries.append((time.monotonic(), "400"))
            return web.json_response({"error": {"message": "max_tokens: too many"}}, status=400)
        if scenario == "ok":
            tries.append((time.monotonic(), "ok"))
            return ok
        if scenario == "slow":
            tries.append((time.monotonic(), "ok"))
            await asyncio.sleep(0.4)
            return ok
        if "DOOMED" in prompt:
            tries.append((time.monotonic(), "503"))
            return web.Response(status=503, text=f"upstream down; you sent {auth}")
        kind = ["500", "429", "garbage", "slow", "ok"][min(step, 4)]
        tries.append((time.monotonic(), kind))
        if kind == "500":
            return web.Response(status=500, text=f"internal error while handling {auth}")
        if kind == "429":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
        if kind == "garbage":
            return web.Response(status=200, text="{\"choices\": [", content_type="application/json")
        if kind == "slow":
            await asyncio.sleep(1.5)  # past HttpOracle.timeout_s below
        return ok


@pytest.fixture
def faulty():
    endpoint = FaultyEndpoint()
    with serving.BackgroundApp(endpoint.app) as bg:
        endpoint.url = bg.url
        yield endpoint


def test_flaky_endpoint_retries_records_failures_and_loses_nothing(faulty, tmp_path, monkeypatch, capfd, caplog):
    import gin
    monkeypatch.setenv(http_oracle.ENV_API_KEY, SECRET)
    for name, value in [("timeout_s", 0.8), ("backoff_s", 0.01), ("max_retries", 5), ("concurrency", 3)]:
        gin.bind_parameter(f"HttpOracle.{name}", value)
    records = _records(6, doomed=(4,))
    inp, out = _write(tmp_path / "in.jsonl", records), str(tmp_path / "out.jsonl")
    counts = reflection.reflect_command(inp, out, mode="instruction", oracle_url=f"{faulty.url}/flaky/v1",
                                        chunk_size=4)
    rows = _read(out)
    assert [r["id"] for r in rows] == [r["id"] for r in records]  # every record, once, in order
    assert counts == {"records": 6, "written": 6, "reflected": 5, "unparsable": 0, "oracle_failed": 1}
    for rec, row in zip(records, rows):
        assert {k: row[k] for k in rec} == rec  # the original fields are kept as they were
        assert row["oracle"] == f"{faulty.url}/flaky/v1 model=fault-model"  # the only model, discovered
        if "DOOMED" in rec["instruction"]:
            err = row["reflection_error"]
            assert err.startswith("oracle failed:") and "gave up after 6 attempts" in err and "HTTP 503" in err
            assert (row["instruction_reflected"], row["output_reflected"]) == (rec["instruction"], rec["output"])
            assert "Bearer ***" in err  # the echoed key is masked before it is recorded
        else:
            task = f"{rec['instruction']}\n\n{rec['input']}"
            assert row["reflection_error"] is None
            assert row["instruction_reflected"] == f"Explain step by step: {task}"
            assert row["output_reflected"] == f"A careful answer to: {task}"
            tries = faulty.attempts[task + "/i"]
            assert [k for _, k in tries] == ["500", "429", "garbage", "slow", "ok"]
            assert tries[2][0] - tries[1][0] >= 0.95  # Retry-After: 1 was honoured
    assert faulty.auth_seen == {f"Bearer {SECRET}"}  # the key was sent, and only in the header
    captured = capfd.readouterr()
    for text in (captured.out, captured.err, caplog.text, open(out).read()):
        assert SECRET not in text
    assert "retrying" in caplog.text and "reflect: wrote" in captured.out


def test_refused_requests_are_not_retried(faulty, monkeypatch):
    monkeypatch.setenv(http_oracle.ENV_API_KEY, SECRET)
    oracle = http_oracle.HttpOracle(f"{faulty.url}/refuse/v1", "fault-model", backoff_s=0.01)
    (result,) = oracle.complete_many([reflection.response_messages(_records(1)[0])])
    assert isinstance(result, OracleError) and "HTTP 400, not retried" in str(result)
    assert [len(t) for t in faulty.attempts.values()] == [1]
    assert SECRET not in repr(oracle) and SECRET not in oracle.name
    with pytest.raises(OracleError):
        oracle.complete([{"role": "user", "content": "<task>\nx\n</task>"}])


def test_oracle_configuration_errors(monkeypatch):
    monkeypatch.delenv(http_oracle.ENV_URL, raising=False)
    with pytest.raises(ValueError, match=r"--oracle_url=http://HOST:PORT/v1 or set \$FLAN_MIX_ORACLE_URL"):
        http_oracle.HttpOracle()
    with pytest.raises(ValueError, match="expected an http:// or https:// URL"):
        http_oracle.HttpOracle("127.0.0.1:8000/v1")
    with pytest.raises(TypeError, match="unknown settings"):
        reflection.reflect_command("in", "out", max_token=3)
    assert http_oracle.parse_retry_after("7") == 7.0 and http_oracle.parse_retry_after("soon") is None
    assert 0 <= http_oracle.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a past date: no wait


def test_an_interrupted_run_resumes_without_duplicates(faulty, tmp_path):
    """A real `run.py curate reflect`, killed (SIGKILL) part way, then run again."""
    records = _records(8)
    inp, out = _write(tmp_path / "in.jsonl", records), str(tmp_path / "out.jsonl")
    url = f"{faulty.url}/slow/v1"
    proc = subprocess.Popen([sys.executable, "run.py", "curate", "reflect", f"--input={inp}", f"--output={out}",
                             "--mode=response", f"--oracle_url={url}", "--oracle_model=fault-model",
                             "--gin.reflect_options.chunk_size=1"], cwd=serving.REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(out) and sum(1 for _ in open(out)) >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    first = _read(out)
    assert 3 <= len(first) < 8, "the run was not interrupted part way"
    counts = reflection.reflect_command(inp, out, mode="response", oracle_url=url, oracle_model="fault-model")
    rows = _read(out)
    assert counts["written"] == 8 - len(first)
    assert rows[:len(first)] == first  # what was written stays as it was
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records) and len(rows) == 8
    # Each record asked the oracle once in all (the ids already written were not asked again) -- a killed
    # request in flight may have been asked once more.
    assert all(len(t) <= 2 for t in faulty.attempts.values()) and len(faulty.attempts) == 8


# ----- against `run.py serve` on a tiny random model -----
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("reflect") / "tiny")
    serving.make_checkpoint(model_dir)
    with serving.Server(model_dir) as server:
        server.wait_ready()
        yield model_dir, server


def test_reflect_against_the_served_model(served, tmp_path, monkeypatch, capfd, caplog):
    """Through HttpOracle, in this process (test_an_interrupted_run_resumes_without_duplicates runs the CLI)."""
    model_dir, server = served
    monkeypatch.setenv(http_oracle.ENV_API_KEY, SECRET)
    records = _records(3)
    inp, out = _write(tmp_path / "in.jsonl", records), str(tmp_path / "out.jsonl")
    counts = reflection.reflect_command(inp, out, mode="both", oracle_url=server.url, max_tokens=16)
    rows = _read(out)
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    for rec, row in zip(records, rows):
        assert {k: row[k] for k in rec} == rec
        assert row["oracle"] == f"{server.url} model=tiny" and row["reflection_mode"] == "both"
        # A random model does not write our sections: both reflections are recorded as unparsable, the
        # originals kept, the raw replies kept for diagnosis.
        assert row["reflection_error"].startswith("unparsable reply: ")
        assert row["response_reflection_error"].startswith("unparsable reply: ")
        assert row["output_reflected"] == rec["output"] and row["output_response_reflected"] == rec["output"]
        assert row["raw_reply"].strip() and row["response_raw_reply"].strip()
    assert counts == {"records": 3, "written": 3, "reflected": 0, "unparsable": 3, "oracle_failed": 0}
    captured = capfd.readouterr()
    assert "reflect: wrote" in captured.out
    for text in (captured.out, captured.err, caplog.text, open(out).read(), server.stderr(), "".join(server.stdout)):
        assert SECRET not in text


@pytest.mark.skipif(importlib.util.find_spec("flan_mix.curation.ifd") is None,
                    reason="flan_mix.curation.ifd (IFD scoring) is not on this branch yet")
def test_selective_reflection_end_to_end(served, faulty, tmp_path):
    """The tiny model as the student, well-formed reflections from the endpoint: every record gets the student's
    scores and the version select_version picks from them."""
    import gin
    model_dir, _ = served
    serving.parse_test_gin(model_dir)
    records = _records(3)
    inp, out = _write(tmp_path / "in.jsonl", records), str(tmp_path / "out.jsonl")
    try:
        counts = reflection.reflect_command(inp, out, mode="both", oracle_url=f"{faulty.url}/ok/v1",
                                            oracle_model="fault-model", selective="true", ifd_batch_size=4)
    finally:
        gin.clear_config()
    rows = _read(out)
    assert [r["id"] for r in rows] == [r["id"] for r in records] and counts["reflected"] == 3
    for rec, row in zip(records, rows):
        choice, reason = reflection.select_version(
            ifd_original=row["ifd_original"], ifd_reflected_pair=row["ifd_reflected_pair"],
            rifd_original=row["reversed_ifd_original"], rifd_reflected_answer=row["reversed_ifd_reflected_answer"])
        assert (row["selected"], row["selection_reason"]) == (choice, reason)
        expected = {"original": rec["output"], "reflected_pair": row["output_reflected"],
                    "reflected_answer": row["output_response_reflected"]}[choice]
        assert row["train_output"] == expected

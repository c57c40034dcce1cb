"""Instant, exact resume of the training data stream: a BatchStream's state() restarts it at the next batch,
with the batches of an uninterrupted run, without re-reading what was consumed (pipeline, packers, tasks)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flan_mix.data import mixing, pipeline, registration, seqio_helpers
from flan_mix.data.flan import flan_tasks
from flan_mix.data.generated import mixture
from flan_mix.data.generated import seqio_tasks as tasks

COT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flan" / "cot"
LENGTHS = {"inputs": 256, "targets": 32}
MIX = "test_resume_generated_mix"


@pytest.fixture(scope="module")
def generated():
    vocabulary = registration.register_all(collections=())
    tasks.register_generated_tasks(vocabulary=vocabulary, seed=0, num_train=30, num_validation=4)
    mixture.register_generated_mixture()
    mixing.register_mixture(MIX, {"gen_sort_words_zs_opt": 1, "gen_add_word_problem_fs_cot": 1,
                                  "gen_syllogism_mc_fs_opt": 2, "gen_table_lookup_fs_noopt": 1})
    return vocabulary


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert set(x) == set(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"batch {i}, {k}")


def _take(stream, n):
    out = [next(stream) for _ in range(n)]
    stream.close()
    return out


@pytest.mark.parametrize("layout,pack,epochs", [("encoder_decoder", True, None), ("prefix_lm", True, None),
                                                ("decoder", False, None), ("encoder_decoder", True, 1)])
def test_resumed_stream_gives_the_uninterrupted_batches(generated, layout, pack, epochs):
    kw = dict(task_feature_lengths=LENGTHS, global_batch_size=4, seed=11, pack=pack, layout=layout,
              num_epochs=epochs, max_open_rows=8)
    # num_epochs=1: 120 examples, so tasks run dry and close mid-stream (the rates renormalize).
    n = 14 if epochs else 24
    full = _take(pipeline.get_batches(MIX, **kw), n)
    for cut in (0, 3, n - 4):
        first = pipeline.get_batches(MIX, **kw)
        for _ in range(cut):
            next(first)
        state = json.loads(json.dumps(first.state()))  # what the checkpoint stores
        first.close()
        _same(_take(pipeline.get_batches(MIX, state=state, **kw), n - cut), full[cut:])
    if epochs:  # and the resumed stream ends where the full one does
        first = pipeline.get_batches(MIX, **kw)
        for _ in range(n - 4):
            next(first)
        rest = list(pipeline.get_batches(MIX, state=first.state(), **kw))
        assert len(rest) == len(list(pipeline.get_batches(MIX, **kw))) - (n - 4)


def test_resume_reads_nothing_already_consumed(generated, monkeypatch):
    """Examples tokenized after a resume at batch 100: only what the next batches need (tasks fetch 16 positions
    at a time; the producer thread packs up to 3 batches ahead), not the 100 batches' worth before."""
    tokenized = []
    real_pair = seqio_helpers.PythonTokenizer.pair
    monkeypatch.setattr(seqio_helpers.PythonTokenizer, "pair",
                        lambda self, i, t: tokenized.append(i) or real_pair(self, i, t))
    kw = dict(task_feature_lengths=LENGTHS, global_batch_size=4, seed=3, max_open_rows=8)
    first = pipeline.get_batches(MIX, **kw)
    for _ in range(100):
        next(first)
    state = first.state()
    first.close()
    consumed = len(tokenized)
    tokenized.clear()
    resumed = pipeline.get_batches(MIX, state=state, **kw)
    batch = next(resumed)
    resumed.close()
    per_batch = int(batch["encoder_segment_ids"].max(axis=1).sum())
    bound = 4 * 16 + 3 * per_batch  # 4 tasks x one fetch each + the batches made ahead
    assert len(tokenized) <= bound and 5 * bound < consumed, (len(tokenized), bound, consumed)


def test_state_of_another_stream_is_refused_with_the_difference(generated):
    kw = dict(task_feature_lengths=LENGTHS, global_batch_size=4, seed=3)
    first = pipeline.get_batches(MIX, **kw)
    next(first)
    state = first.state()
    first.close()
    with pytest.raises(pipeline.DataStateMismatch, match=r"global_batch_size was 4, now 8.*fresh MODEL_DIR"):
        pipeline.get_batches(MIX, state=state, **{**kw, "global_batch_size": 8})
    with pytest.raises(pipeline.DataStateMismatch, match=r"seed was 3, now 4"):
        pipeline.get_batches(MIX, state=state, **{**kw, "seed": 4})


@pytest.mark.skipif(not COT_DIR.is_dir(), reason=f"real CoT TSVs not found at {COT_DIR} (../shared/data absent)")
def test_flan_cot_few_shot_windows_resume_exactly():
    """Flan 2022 CoT tasks read real TSVs by position; few-shot prompts draw exemplars from a window of
    neighbouring examples, which the state names by cursor and the resume re-fetches."""
    vocabulary = registration.register_all(collections=())
    flan_tasks.register_flan2022(vocabulary, allow_missing_tasks=True, cot_dir=str(COT_DIR), submixtures=("cot",))
    names = [n for n in ("flan2022_cot_gsm8k_fs_opt", "flan2022_stream_qasc_fs_opt",
                         "flan2022_stream_qasc_zs_opt") if n in pipeline.seqio.TaskRegistry.names()]
    assert len(names) == 3, names
    mixing.register_mixture("test_resume_cot_mix", {n: 1 for n in names})
    kw = dict(task_feature_lengths={"inputs": 512, "targets": 128}, global_batch_size=2, seed=5,
              max_open_rows=4, shard_index=1, num_shards=2)
    full = _take(pipeline.get_batches("test_resume_cot_mix", **kw), 10)
    first = pipeline.get_batches("test_resume_cot_mix", **kw)
    for _ in range(4):
        next(first)
    state = json.loads(json.dumps(first.state()))
    first.close()
    windows = [s for s in state["mixture"]["tasks"].values() if s.get("history")]
    assert windows, "a few-shot task's window should be in the state"
    _same(_take(pipeline.get_batches("test_resume_cot_mix", state=state, **kw), 6), full[4:])

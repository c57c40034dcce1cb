"""Decoder-only layouts (flan_mix.data.decoder_packing): seqio's DecoderFeatureConverter and
PrefixLMFeatureConverter as peers for next-fit and unpacked rows, hand-worked rows for each layout, first-fit
against next-fit, and get_batches(layout=...) on a generated task."""
import collections

import numpy as np
import pytest
import seqio
import tensorflow as tf

from flan_mix.data import decoder_packing as dp
from flan_mix.data import pipeline, vocab
from flan_mix.data.generated import seqio_tasks as tasks
from tests.helpers import distinct_examples as _examples


def _seqio_rows(exs, layout, lengths, pack, converter=None):
    """seqio's converter on the examples, trimmed first the way a Task's trim_output_features does (the
    converter rejects over-long features)."""
    keys = ("targets",) if layout == dp.DECODER else ("inputs", "targets")
    task_lengths = {k: lengths[k] for k in keys}

    def gen():
        for a, b in exs:
            ex = {"inputs": a[:lengths["inputs"]], "targets": b[:lengths["targets"]]}
            yield {k: ex[k] for k in keys}

    ds = tf.data.Dataset.from_generator(gen, output_signature={k: tf.TensorSpec([None], tf.int32) for k in keys})
    converter = converter or seqio.DecoderFeatureConverter(pack=pack)
    return list(converter(ds, task_feature_lengths=task_lengths).batch(1).as_numpy_iterator())


def _assert_rows_equal(ours, ref, features, ignore_padding_inputs=False):
    assert len(ours) == len(ref) > 3
    for a, b in zip(ours, ref):
        assert set(a) == set(b) == set(features)
        for k in a:
            want = b[k]
            if ignore_padding_inputs and k == "decoder_input_tokens":
                want = np.where(b["decoder_segment_ids"] > 0, want, 0)
            np.testing.assert_array_equal(a[k], want, err_msg=k)


@pytest.mark.parametrize("layout,converter", [
    (dp.DECODER, "DecoderFeatureConverter"),
    (dp.PREFIX_LM, "DecoderFeatureConverter"),
    (dp.PREFIX_LM, "PrefixLMFeatureConverter"),
])
def test_next_fit_equals_seqio(layout, converter):
    rng = np.random.default_rng(0)
    lengths = {"inputs": 40, "targets": 24}
    # Fewer examples than seqio's flush window (max of its lengths: 24 targets-only, 64 concatenated), so both
    # packers see one stream; some are longer than the row parts and get trimmed.
    n = 23 if layout == dp.DECODER else 60
    exs = _examples(rng.integers(1, 50, n), rng.integers(1, 30, n))
    ours = list(dp.pack_decoder_batches(exs, layout, lengths, batch_size=1, max_open_rows=1))
    ref = _seqio_rows(exs, layout, lengths, pack=True, converter=getattr(seqio, converter)(pack=True))
    _assert_rows_equal(ours, ref, dp.layout_features(layout))


@pytest.mark.parametrize("layout", [dp.DECODER, dp.PREFIX_LM])
def test_unpacked_equals_seqio(layout):
    rng = np.random.default_rng(1)
    lengths = {"inputs": 12, "targets": 8}
    exs = _examples(rng.integers(1, 16, 9), rng.integers(1, 11, 9))
    ours = list(dp.unpacked_decoder_batches(exs, layout, lengths, batch_size=1))
    _assert_rows_equal(ours, _seqio_rows(exs, layout, lengths, pack=False), dp.layout_features(layout, False))


def test_loss_on_all_tokens_and_bos_id_equal_seqio():
    rng = np.random.default_rng(2)
    lengths = {"inputs": 16, "targets": 8}
    exs = _examples(rng.integers(1, 20, 20), rng.integers(1, 10, 20))
    conv = seqio.PrefixLMFeatureConverter(pack=True, loss_on_targets_only=False, bos_id=7)
    ours = list(dp.pack_decoder_batches(exs, dp.PREFIX_LM, lengths, 1, 1, loss_on_targets_only=False, bos_id=7))
    # seqio's shift also writes bos_id at the first padding position (padding differs from the last segment id
    # there); padding is never attended or scored, and we leave it 0.
    _assert_rows_equal(ours, _seqio_rows(exs, dp.PREFIX_LM, lengths, True, conv), dp.PREFIX_LM_FEATURES,
                       ignore_padding_inputs=True)
    conv = seqio.PrefixLMFeatureConverter(pack=False, bos_id=7)
    ours = list(dp.unpacked_decoder_batches(exs, dp.PREFIX_LM, lengths, 1, bos_id=7))
    _assert_rows_equal(ours, _seqio_rows(exs, dp.PREFIX_LM, lengths, False, conv), dp.PREFIX_LM_UNPACKED_FEATURES)


def test_decoder_rows_by_hand():
    exs = [([99], [20, 1]), ([98], [21, 22, 1]), ([97], [23, 24, 25, 26, 1])]  # inputs unused in this layout
    exs = [(np.array(a, np.int32), np.array(b, np.int32)) for a, b in exs]
    b0, b1 = dp.pack_decoder_batches(exs, dp.DECODER, {"inputs": 4, "targets": 8}, batch_size=1, max_open_rows=1)
    row = {k: v[0].tolist() for k, v in b0.items()}
    assert row == {
        "decoder_target_tokens": [20, 1, 21, 22, 1, 0, 0, 0],
        "decoder_input_tokens": [0, 20, 0, 21, 22, 0, 0, 0],  # shifted within each segment
        "decoder_loss_weights": [1, 1, 1, 1, 1, 0, 0, 0],
        "decoder_segment_ids": [1, 1, 2, 2, 2, 0, 0, 0],
        "decoder_positions": [0, 1, 0, 1, 2, 0, 0, 0],
    }
    assert b1["decoder_target_tokens"][0].tolist() == [23, 24, 25, 26, 1, 0, 0, 0]  # 5 more would overflow 8


def test_prefix_lm_rows_by_hand():
    exs = [([3, 4, 1], [20, 1]), ([5, 1], [21, 22, 1]), ([6, 7, 8, 9, 10, 11, 12, 1], [23, 1])]
    exs = [(np.array(a, np.int32), np.array(b, np.int32)) for a, b in exs]
    lengths = {"inputs": 6, "targets": 4}  # rows of 6 + 4 = 10 tokens
    b0, b1 = dp.pack_decoder_batches(exs, dp.PREFIX_LM, lengths, batch_size=1, max_open_rows=1)
    assert {k: v[0].tolist() for k, v in b0.items()} == {
        "decoder_target_tokens": [3, 4, 1, 20, 1, 5, 1, 21, 22, 1],
        "decoder_input_tokens": [0, 3, 4, 1, 20, 0, 5, 1, 21, 22],
        "decoder_loss_weights": [0, 0, 0, 1, 1, 0, 0, 1, 1, 1],  # targets only
        "decoder_segment_ids": [1, 1, 1, 1, 1, 2, 2, 2, 2, 2],
        "decoder_positions": [0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
        # len(inputs) + 1 positions per segment: those whose decoder input is BOS or an inputs token
        "decoder_causal_attention": [1, 1, 1, 1, 0, 1, 1, 1, 0, 0],
    }
    # The third example's inputs are trimmed to 6 tokens (its EOS is cut, as a plain trim does).
    assert {k: v[0].tolist() for k, v in b1.items()} == {
        "decoder_target_tokens": [6, 7, 8, 9, 10, 11, 23, 1, 0, 0],
        "decoder_input_tokens": [0, 6, 7, 8, 9, 10, 11, 23, 0, 0],
        "decoder_loss_weights": [0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
        "decoder_segment_ids": [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        "decoder_positions": [0, 1, 2, 3, 4, 5, 6, 7, 0, 0],
        "decoder_causal_attention": [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    }
    # The same rows from seqio (all three examples fit its window of 10).
    ref = _seqio_rows(exs, dp.PREFIX_LM, lengths, pack=True)
    for a, b in zip((b0, b1), ref):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_first_fit_fills_rows_next_fit_leaves_open():
    exs = _examples([1] * 4, [5, 5, 3, 3])
    lengths = {"inputs": 1, "targets": 8}
    assert len(list(dp.pack_decoder_batches(exs, dp.DECODER, lengths, 1, max_open_rows=1))) == 3  # [5] [5 3] [3]
    first = list(dp.pack_decoder_batches(exs, dp.DECODER, lengths, 1, max_open_rows=2))  # [5 3] [5 3]
    assert len(first) == 2
    assert first[0]["decoder_segment_ids"][0].tolist() == [1] * 5 + [2] * 3
    assert first[0]["decoder_target_tokens"][0].tolist() == exs[0][1].tolist() + exs[2][1].tolist()


def _lognormal_examples(n, seed=1):
    rng = np.random.default_rng(seed)
    return _examples(np.clip(rng.lognormal(3.0, 0.8, n).astype(int), 1, 200),
                     np.clip(rng.lognormal(1.8, 0.7, n).astype(int), 1, 50))


def test_first_fit_rows_are_fuller_than_next_fit():
    lengths = {"inputs": 128, "targets": 32}
    segments = list(dp._segments(_lognormal_examples(3000), dp.PREFIX_LM, lengths))
    fill = {}
    for k in (1, 64):
        rows = list(dp.decoder_rows(segments, 160, max_open_rows=k))
        fill[k] = sum(r.used for r in rows) / (160 * len(rows))
    # Measured when written: 0.86 next-fit (735 rows), 0.99 first-fit over 64 open rows (639 rows).
    assert fill[64] > fill[1] + 0.1, fill


def _segments_of(tokens, seg):
    return [tokens[seg == s] for s in range(1, seg.max() + 1)]


@pytest.mark.parametrize("max_open_rows", [1, 64])
def test_prefix_lm_rows_unpack_to_the_examples(max_open_rows):
    lengths = {"inputs": 96, "targets": 32}
    exs = _lognormal_examples(300)
    batches = list(dp.pack_decoder_batches(exs, dp.PREFIX_LM, lengths, 4, max_open_rows))
    # example (trimmed inputs + trimmed targets) -> its inputs' length; tokens are distinct across examples
    want = {tuple(a[:96].tolist() + t[:32].tolist()): len(a[:96]) for a, t in exs}
    got = collections.Counter()
    for b in batches:
        for i in range(4):
            tgt, seg, pos = b["decoder_target_tokens"][i], b["decoder_segment_ids"][i], b["decoder_positions"][i]
            n_used = int((seg > 0).sum())
            assert (seg[:n_used] > 0).all() and (seg[n_used:] == 0).all()  # padding only at the end
            for s in range(1, seg.max() + 1):
                m = seg == s
                toks, n = tgt[m], int(m.sum())
                assert pos[m].tolist() == list(range(n))
                assert b["decoder_input_tokens"][i][m].tolist() == [0] + toks[:-1].tolist()
                n_in = want[tuple(toks.tolist())]
                assert b["decoder_loss_weights"][i][m].tolist() == [0] * n_in + [1] * (n - n_in)
                assert b["decoder_causal_attention"][i][m].tolist() == [1] * (n_in + 1) + [0] * (n - n_in - 1)
                got[tuple(toks.tolist())] += 1
            assert not b["decoder_loss_weights"][i][seg == 0].any()
            assert not b["decoder_causal_attention"][i][seg == 0].any()
    assert max(got.values()) == 1  # every example at most once
    # Only the rows of a last partial batch (at most 3 rows of 128 tokens) are missing.
    assert 0 <= sum(len(k) for k in want) - sum(len(k) for k in got) <= 3 * 128


def test_feature_lengths_and_bad_arguments():
    lengths = {"inputs": 256, "targets": 64}
    assert dp.model_feature_lengths(dp.PREFIX_LM, lengths) == {k: 320 for k in dp.PREFIX_LM_FEATURES}
    assert dp.model_feature_lengths(dp.DECODER, lengths, pack=False) == {k: 64 for k in
                                                                         dp.DECODER_UNPACKED_FEATURES}
    encdec = dp.model_feature_lengths(dp.ENCODER_DECODER, lengths)
    assert encdec["encoder_input_tokens"] == 256 and encdec["decoder_target_tokens"] == 64
    assert dp.model_feature_lengths(dp.PREFIX_LM, lengths) == dict(
        seqio.PrefixLMFeatureConverter(pack=True).get_model_feature_lengths(lengths))
    with pytest.raises(ValueError, match="'prefix-lm'.*'prefix_lm'"):
        dp.layout_features("prefix-lm")
    with pytest.raises(ValueError, match="empty targets"):
        list(dp.pack_decoder_batches([(np.array([5, 1]), np.array([], np.int32))], dp.PREFIX_LM, lengths, 1))
    with pytest.raises(ValueError, match="max_open_rows"):
        list(dp.pack_decoder_batches(_examples([2], [2]), dp.DECODER, lengths, 1, max_open_rows=0))


# ------------------------------------------------------------------------------------------------------------
# get_batches(layout=...) on the generated collection
LENGTHS = {"inputs": 256, "targets": 64}
TASK = "gen_sort_words_zs_opt"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    vocabulary = vocab.get_vocabulary(corpus=tasks.VOCABULARY_CORPUS,
                                      cache_dir=str(tmp_path_factory.mktemp("flan_mix_cache")))
    # The same counts as test_data_pipeline, so the two modules do not re-register each other's tasks.
    return tasks.register_generated_tasks(vocabulary=vocabulary, seed=0, num_train=40, num_validation=12)


def test_get_batches_prefix_lm_layout(registered):
    kw = dict(task_feature_lengths=LENGTHS, global_batch_size=4, seed=0, shuffle=False, num_epochs=1)
    batches = list(pipeline.get_batches(TASK, layout="prefix_lm", **kw))
    stream = list(pipeline.token_stream(TASK, task_feature_lengths=LENGTHS, seed=0, shuffle=False, num_epochs=1))
    want = {tuple(np.concatenate([a, t]).tolist()): len(a) for a, t in stream}
    seen = 0
    for b in batches:
        assert set(b) == set(pipeline.PREFIX_LM_FEATURES)
        assert all(v.shape == (4, 320) and v.dtype == np.int32 for v in b.values())
        for i in range(4):
            seg, pos = b["decoder_segment_ids"][i], b["decoder_positions"][i]
            assert seg.max() >= 2  # short zero-shot examples: several per row
            for s in range(1, seg.max() + 1):
                m = seg == s
                assert pos[m].tolist() == list(range(int(m.sum())))  # positions restart in every segment
                toks = tuple(b["decoder_target_tokens"][i][m].tolist())
                n_in = want[toks]  # every segment is one stream example, inputs then targets
                assert b["decoder_loss_weights"][i][m].tolist() == [0] * n_in + [1] * (len(toks) - n_in)
                seen += 1
    assert seen > 30  # 40 examples, a last partial batch dropped
    # Next-fit rows equal seqio.get_dataset's with its PrefixLM converter (40 examples < its window of 320).
    ours = list(pipeline.get_batches(TASK, layout="prefix_lm", max_open_rows=1, **{**kw, "global_batch_size": 1}))
    ref = list(seqio.get_dataset(TASK, LENGTHS, seqio.PrefixLMFeatureConverter(pack=True), dataset_split="train",
                                 shuffle=False, num_epochs=1, batch_size=1).as_numpy_iterator())
    assert len(ours) == len(ref) >= 3
    for a, b in zip(ours, ref):
        for k in pipeline.PREFIX_LM_FEATURES:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_get_batches_decoder_layout_and_unpacked(registered):
    kw = dict(task_feature_lengths=LENGTHS, global_batch_size=2, seed=0, shuffle=False, num_epochs=1)
    stream = list(pipeline.token_stream(TASK, task_feature_lengths=LENGTHS, seed=0, shuffle=False, num_epochs=1))
    b = next(pipeline.get_batches(TASK, layout="decoder", **kw))
    assert set(b) == set(pipeline.DECODER_FEATURES) and b["decoder_target_tokens"].shape == (2, 64)
    seg = b["decoder_segment_ids"][0]
    assert b["decoder_target_tokens"][0][seg == 1].tolist() == stream[0][1].tolist()  # the targets alone
    assert b["decoder_loss_weights"][0].tolist() == (seg > 0).astype(int).tolist()
    u = next(pipeline.get_batches(TASK, layout="prefix_lm", pack=False, **kw))
    assert set(u) == set(dp.PREFIX_LM_UNPACKED_FEATURES) and u["decoder_target_tokens"].shape == (2, 320)
    (a, t) = stream[1]
    assert u["decoder_target_tokens"][1, :len(a) + len(t)].tolist() == a.tolist() + t.tolist()
    assert u["decoder_causal_attention"][1].sum() == len(a) + 1
    with pytest.raises(ValueError, match="Unknown batch layout 'lm'"):
        pipeline.get_batches(TASK, layout="lm", **kw)

"""Beam search (models/beam_search.py through EncoderDecoderModel) and self-consistency voting
(infer/self_consistency.py), on tiny random T5 weights.

Oracles: the greedy decoder, and an exhaustive search over every sequence of a tiny vocabulary
scored by teacher-forced Model.score (no cache, no beams: a different code path).
"""
import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_mix.infer import decoding, self_consistency as sc
from flan_mix.models import beam_search
from flan_mix.models.base import DecodingConfig
from flan_mix.models.encoder_decoder import EOS_ID, EncoderDecoderModel, beam_decode
from flan_mix.models.t5 import T5Config
from flan_mix.runtime import partitioning
from tests.helpers import TINY

# Float32 noise between cached decoding and teacher forcing is ~1e-5 in a summed log-prob.
SCORE_ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    model = EncoderDecoderModel(T5Config(**TINY))
    return model, model.init_params(jax.random.PRNGKey(0))


def _encoder_inputs(seed, batch, length, vocab):
    tokens = np.random.default_rng(seed).integers(2, vocab, (batch, length)).astype(np.int32)
    tokens[0, length // 2:] = 0  # one padded row
    return tokens


# ----- num_beams = 1 is greedy -----

def test_num_beams_1_is_the_greedy_decoder(tiny):
    model, params = tiny
    enc = _encoder_inputs(0, 4, 12, 128)
    greedy = np.asarray(model.predict(params, {"inputs": enc}, DecodingConfig(10)))
    one_beam = np.asarray(model.predict(params, {"inputs": enc},
                                        DecodingConfig(10, num_beams=1, length_penalty=0.6)))
    np.testing.assert_array_equal(one_beam, greedy)


def test_one_beam_search_follows_the_greedy_path(tiny):
    """The search itself at K=1 is not greedy: its alive beam walks greedy's path, but it also keeps
    the best sequence that ended with an EOS on the way (t5x's search does the same). So at
    alpha = 0 it returns greedy's sequence, or greedy's prefix + EOS with a score at least as high."""
    model, params = tiny
    enc = _encoder_inputs(1, 8, 12, 128)
    greedy = np.asarray(model.predict(params, {"inputs": enc}, DecodingConfig(10)))
    ids, scores = beam_decode(model.module, params, jnp.asarray(enc), decoding=DecodingConfig(10, num_beams=1))
    ids, scores = np.asarray(ids)[:, 0], np.asarray(scores)[:, 0]
    beam_scores, greedy_scores = _teacher_forced(model, params, np.concatenate([enc, enc]),
                                                 [_strip(row) for row in np.concatenate([ids, greedy])]
                                                 ).reshape(2, len(enc))
    np.testing.assert_allclose(scores, beam_scores, atol=SCORE_ATOL)
    differs = (ids != greedy).any(1)
    assert 0 < differs.sum() < len(enc)  # both cases occur in this batch
    for b in np.flatnonzero(differs):
        end = list(ids[b]).index(EOS_ID)
        np.testing.assert_array_equal(ids[b, :end], greedy[b, :end])
        assert scores[b] + SCORE_ATOL >= greedy_scores[b]


# ----- exhaustive search on a tiny vocabulary -----

VALID, T = 4, 4  # tokens 0, 1 (EOS), 2, 3; ids 4..7 are embedding padding
NON_EOS = [t for t in range(VALID) if t != EOS_ID]
# Exactness. While a sequence goes on, it is one of len(NON_EOS) ** t unfinished prefixes. With
# K >= len(NON_EOS) ** (T - 1) every one of them stays alive (the 2K candidates of a step hold all
# n**(t+1) + n**t extensions), and at the last step the global top K lies in that step's top 2K;
# the finished set keeps the top K of all that ended, and the early stop is sound. So this search
# is exhaustive, and its K finished scores are the brute-force top K.
EXACT_BEAMS = len(NON_EOS) ** (T - 1)  # 27
ALL_SEQUENCES = ([list(p) + [EOS_ID] for n in range(T) for p in itertools.product(NON_EOS, repeat=n)]
                 + [list(p) for p in itertools.product(NON_EOS, repeat=T)])  # the last: cut at the length limit


def _strip(row):
    row = list(row)
    return row[:row.index(EOS_ID) + 1] if EOS_ID in row else row


def _teacher_forced(model, params, enc_rows, seqs):
    """Summed target log-probs of seqs[i] after enc_rows[i], by one teacher-forced pass. Segment ids
    are explicit: a generated 0 (T5's pad id) is a real token here, not padding."""
    n, length = len(seqs), max(map(len, seqs))
    targets, weights = np.zeros((n, length), np.int32), np.zeros((n, length), np.int32)
    for i, s in enumerate(seqs):
        targets[i, :len(s)], weights[i, :len(s)] = s, 1
    batch = {"encoder_input_tokens": np.asarray(enc_rows), "decoder_target_tokens": targets,
             "decoder_input_tokens": np.concatenate([np.zeros((n, 1), np.int32), targets[:, :-1]], 1),
             "decoder_segment_ids": np.ones_like(targets), "decoder_loss_weights": weights}
    return np.asarray(model.score(params, batch)["sum_logprob"])


@pytest.fixture(scope="module")
def peaked():
    """vocab 8, of which VALID are real. The output layer is scaled up 10x: a random model is near
    uniform, and then the lone EOS always wins and search has nothing to find. Weights and inputs
    were chosen so that greedy and narrow beams miss the best sequence on several rows and the
    length penalty changes the winner on some (asserted below, so the test stays discriminating)."""
    model = EncoderDecoderModel(T5Config(**{**TINY, "vocab_size": 8}))
    params = model.init_params(jax.random.PRNGKey(1))
    params["decoder"]["logits_dense"]["kernel"] = params["decoder"]["logits_dense"]["kernel"] * 10.0
    enc = np.random.default_rng(0).integers(2, 8, (16, 6)).astype(np.int32)
    log_probs = _teacher_forced(model, params, np.repeat(enc, len(ALL_SEQUENCES), 0),
                                ALL_SEQUENCES * len(enc)).reshape(len(enc), len(ALL_SEQUENCES))
    return model, params, enc, log_probs


def _brute_force_scores(log_probs, alpha):
    lengths = np.array([len(s) for s in ALL_SEQUENCES])
    return log_probs / beam_search.brevity_penalty(lengths, alpha)


def _padded(seq):
    return seq + [0] * (T - len(seq))


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_matches_exhaustive_search(peaked, alpha):
    model, params, enc, log_probs = peaked
    scores = _brute_force_scores(log_probs, alpha)
    order = np.argsort(-scores, axis=1, kind="stable")
    best = [ALL_SEQUENCES[i] for i in order[:, 0]]
    top = np.take_along_axis(scores, order, 1)
    assert (top[:, 0] - top[:, 1]).min() > 100 * SCORE_ATOL  # no near-tie float noise could flip

    def search(k):
        ids, s = beam_decode(model.module, params, jnp.asarray(enc),
                             decoding=DecodingConfig(T, num_beams=k, length_penalty=alpha, valid_vocab_size=VALID))
        return np.asarray(ids), np.asarray(s)

    ids, got = search(EXACT_BEAMS)
    np.testing.assert_array_equal(ids[:, 0], [_padded(s) for s in best])
    np.testing.assert_allclose(got, top[:, :EXACT_BEAMS], atol=SCORE_ATOL)  # the whole top K, in order
    np.testing.assert_array_equal(
        np.asarray(model.predict(params, {"inputs": enc},
                                 DecodingConfig(T, num_beams=EXACT_BEAMS, length_penalty=alpha, valid_vocab_size=VALID))),
        ids[:, 0])

    # Narrower beams: never above the optimum, and each reported score is its sequence's real score.
    narrow_misses = 0
    for k in (1, 2, VALID):
        ids, got = search(k)
        assert (got[:, 0] <= top[:, 0] + SCORE_ATOL).all()
        index = [ALL_SEQUENCES.index(_strip(row)) for row in ids[:, 0]]
        np.testing.assert_allclose(got[:, 0], scores[np.arange(len(enc)), index], atol=SCORE_ATOL)
        narrow_misses += int((ids[:, 0] != [_padded(s) for s in best]).any(1).sum())

    # The setup is hard enough to mean something: greedy and narrow beams miss on some rows.
    greedy = np.asarray(model.predict(params, {"inputs": enc}, DecodingConfig(T, valid_vocab_size=VALID)))
    assert (greedy != [_padded(s) for s in best]).any(1).sum() >= 3 and narrow_misses >= 3


def test_length_penalty_changes_the_winner_as_brute_force_says(peaked):
    model, params, enc, log_probs = peaked
    winners = {alpha: _brute_force_scores(log_probs, alpha).argmax(1) for alpha in (0.0, 0.6)}
    changed = winners[0.0] != winners[0.6]
    assert changed.any()
    # alpha > 0 divides longer sequences' (negative) log-probs by more, so winners only grow longer.
    lengths = np.array([len(s) for s in ALL_SEQUENCES])
    assert (lengths[winners[0.6][changed]] > lengths[winners[0.0][changed]]).all()


# ----- padded vocabulary -----

def test_padded_vocab_never_appears_in_beams(tiny):
    model, params = tiny
    enc = _encoder_inputs(2, 4, 12, 128)

    def beams(valid):
        ids, scores = beam_decode(model.module, params, jnp.asarray(enc),
                                  decoding=DecodingConfig(8, num_beams=4, valid_vocab_size=valid))
        return np.asarray(ids), np.asarray(scores)

    unmasked, _ = beams(None)
    assert (unmasked >= 10).any()  # without the mask, this model does pick ids past 10
    masked, scores = beams(10)
    assert (masked < 10).all() and (scores > -1e3).all()  # every beam real, none built on a masked id
    predicted = model.predict(params, {"inputs": enc},
                              DecodingConfig(8, num_beams=4, valid_vocab_size=10))
    assert (np.asarray(predicted) < 10).all()


# ----- configuration and cache errors -----

def test_config_and_cache_refusals():
    with pytest.raises(ValueError, match="does not sample"):
        DecodingConfig(8, num_beams=4, temperature=0.7)
    with pytest.raises(ValueError, match="length_penalty"):
        DecodingConfig(8, num_beams=4, length_penalty=-0.5)
    cache = {"index": jnp.int32(3), "keys": jnp.arange(6.0).reshape(6, 1)}  # B=2, K=3
    moved = beam_search.reorder_cache(cache, jnp.array([[2, 2, 0], [1, 0, 0]]), 2, 3)
    assert int(moved["index"]) == 3 and moved["keys"][:, 0].tolist() == [2, 2, 0, 4, 3, 3]
    with pytest.raises(ValueError, match="batch \\* num_beams"):
        beam_search.reorder_cache({"keys": jnp.zeros((5, 1))}, jnp.zeros((2, 3), jnp.int32), 2, 3)


# ----- self-consistency -----

def test_majority_vote_ties_go_to_the_first_seen():
    assert sc.majority_vote(["b", "a", "a", "b", "c"]) == ("b", 2)
    assert sc.majority_vote(["x", "y", "y"]) == ("y", 2)
    assert sc.majority_vote(["only"]) == ("only", 1)
    with pytest.raises(ValueError, match="no answers"):
        sc.majority_vote([])


def test_self_consistency_votes_over_seeds_with_a_fake_sampler():
    seen = []
    paths = {0: ["... so 7", "... so 2", "no idea"], 1: ["... so 5", "... so 2", "no idea"],
             2: ["... so 5", "... so 3", "no idea"]}

    def generate(prompts, seed):
        seen.append(seed)
        return paths[seed - 10]

    extract = lambda text: text.rsplit("so ", 1)[1] if "so " in text else None
    out = sc.self_consistency(generate, ["p0", "p1", "p2"], k=3, extract_fn=extract, seed=10)
    assert seen == [10, 11, 12]
    assert [(r["answer"], r["votes"]) for r in out] == [("5", 2), ("2", 2), (None, 0)]
    assert out[0]["samples"] == ["... so 7", "... so 5", "... so 5"] and out[0]["answers"] == ["7", "5", "5"]
    with pytest.raises(ValueError, match="one per prompt"):
        sc.self_consistency(lambda p, s: ["x"], ["p0", "p1"], k=2, extract_fn=extract)


class _DigitVocab:
    """A toy vocabulary: ids 0..5 written as digits (generate uses .decode, .vocab_size and .eos_id)."""
    vocab_size = 6
    eos_id = 1

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def test_self_consistency_with_the_sampling_decoder(tiny):
    model, params = tiny
    prompts = list(_encoder_inputs(3, 3, 10, 128))
    kwargs = dict(mesh=partitioning.make_mesh(), inputs_length=10, max_decode_len=4, batch_size=4)
    generate = sc.sampling_generate_fn(model, params, _DigitVocab(), temperature=1.0, **kwargs)
    first_token = lambda text: text.split()[0] if text else None  # the "answer": the first id
    k = 5
    out = sc.self_consistency(generate, prompts, k=k, extract_fn=first_token, seed=100)
    # Each sample is what that seed's sampling run produces, and different seeds sample differently.
    for i in (0, k - 1):
        run = decoding.generate(model, params, prompts, _DigitVocab(), temperature=1.0, seed=100 + i, **kwargs)
        assert [r["samples"][i] for r in out] == run
    assert any(len(set(r["samples"])) > 1 for r in out)
    for r in out:
        voting = [a for a in r["answers"] if a is not None]
        counts = collections.Counter(voting)
        assert r["votes"] == max(counts.values()) == counts[r["answer"]]
        assert r["answer"] == next(a for a in voting if counts[a] == r["votes"])  # first of the tied

"""T5 forward pass: shapes, logical axes, and packing/padding/causal masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from flan_mix.kernels import reference
from flan_mix.models.attention import attention
from tests.helpers import packed_batch, tiny_model


@pytest.fixture(scope="module")
def model_and_params():
    model = tiny_model()
    batch = packed_batch(np.random.default_rng(0))
    variables = model.init(jax.random.PRNGKey(0), **batch)
    return model, nn.meta.unbox(variables["params"]), variables


def _logits(model, params, batch):
    return np.asarray(model.apply({"params": params}, **batch))


def test_shapes_and_logical_axes(model_and_params):
    model, params, variables = model_and_params
    batch = packed_batch(np.random.default_rng(1))
    logits = _logits(model, params, batch)
    assert logits.shape == (4, 12, 128) and logits.dtype == np.float32
    specs = nn.get_partition_spec(variables)["params"]
    assert specs["encoder"]["layer_0"]["attention"]["query"]["kernel"] == jax.sharding.PartitionSpec("embed", "heads", "kv")
    assert specs["decoder"]["layer_1"]["mlp"]["wo"]["kernel"] == jax.sharding.PartitionSpec("mlp", "embed")
    assert specs["decoder"]["logits_dense"]["kernel"] == jax.sharding.PartitionSpec("embed", "vocab")
    assert specs["token_embed"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
    assert specs["encoder"]["relpos_bias"]["rel_embedding"] == jax.sharding.PartitionSpec("heads", "relpos_buckets")
    # T5 1.1 unties the output layer: two different matrices.
    assert params["decoder"]["logits_dense"]["kernel"].shape == (32, 128)


def test_other_segment_and_padding_tokens_change_nothing(model_and_params):
    model, params, _ = model_and_params
    rng = np.random.default_rng(2)
    batch = packed_batch(rng)
    base = _logits(model, params, batch)
    changed = {k: v.copy() for k, v in batch.items()}
    # Rewrite everything outside segment 1: segment 2's tokens and the padding tokens.
    for enc_or_dec, tok in (("encoder", "encoder_input_tokens"), ("decoder", "decoder_input_tokens")):
        outside = batch[f"{enc_or_dec}_segment_ids"] != 1
        changed[tok][outside] = rng.integers(2, 128, outside.sum())
    out = _logits(model, params, changed)
    seg1 = batch["decoder_segment_ids"] == 1
    np.testing.assert_allclose(out[seg1], base[seg1], rtol=1e-5, atol=1e-5)
    seg2 = batch["decoder_segment_ids"] == 2
    assert not np.allclose(out[seg2], base[seg2], atol=1e-3)  # the edit did reach segment 2


def test_future_decoder_tokens_change_nothing(model_and_params):
    model, params, _ = model_and_params
    batch = packed_batch(np.random.default_rng(3))
    base = _logits(model, params, batch)
    changed = {k: v.copy() for k, v in batch.items()}
    changed["decoder_input_tokens"][:, 5:] = 7
    out = _logits(model, params, changed)
    np.testing.assert_allclose(out[:, :5], base[:, :5], rtol=1e-5, atol=1e-5)


def test_relative_position_bucket_hand_values():
    # Hand-worked with T5's rule: 16 buckets per direction, 8 exact, log-spaced up to 128.
    rel = jnp.array([0, -1, -7, -8, -12, -16, -32, -64, -127, -500, 1, 3])
    got = reference.relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    # distance 8 -> 8 + int(log(1)/log(16)*8)=8; 12 -> 8+int(log(1.5)/log(16)*8)=9; 16 -> 10;
    # 32 -> 12; 64 -> 14; 127 -> 15; 500 -> capped 15; keys ahead (rel > 0) add the offset 16.
    assert got.tolist() == [0, 1, 7, 8, 9, 10, 12, 14, 15, 15, 17, 19]
    uni = reference.relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    # 32 buckets, 16 exact; 32 -> 16 + int(log(2)/log(8)*16) = 21; future keys all map to 0.
    assert uni[:8].tolist() == [0, 1, 7, 8, 12, 16, 21, 26] and uni[-2:].tolist() == [0, 0]


def test_reference_attention_fully_masked_rows_are_zero():
    rng = np.random.default_rng(4)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 4, 2, 8)), jnp.float32) for _ in range(3))
    seg = jnp.array([[1, 1, 0, 0]], jnp.int32)
    out = attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, implementation="xla")
    assert np.all(np.asarray(out[0, 2:]) == 0) and np.all(np.isfinite(np.asarray(out)))


def test_cudnn_refuses_what_it_cannot_express():
    x = jnp.zeros((1, 4, 2, 8))
    seg = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="segment ids"):
        attention(x, x, x, q_segment_ids=seg, kv_segment_ids=seg, implementation="cudnn")
    with pytest.raises(ValueError, match="unknown attention implementation"):
        attention(x, x, x, implementation="flash")


def test_cached_decoding_matches_teacher_forcing(model_and_params):
    """Greedy decoding with the KV cache picks, at every step, the argmax of a full teacher-forced pass."""
    from flan_mix.models.base import DecodingConfig
    from flan_mix.models.encoder_decoder import EncoderDecoderModel
    model, params, _ = model_and_params
    rng = np.random.default_rng(5)
    enc = rng.integers(2, 128, (3, 20)).astype(np.int32)
    enc[1, 12:] = 0  # padding
    out = np.asarray(EncoderDecoderModel(model.config).predict(
        params, {"inputs": enc}, DecodingConfig(max_decode_len=10)))
    dec_in = np.concatenate([np.zeros((3, 1), np.int32), out[:, :-1]], axis=1)
    logits = model.apply({"params": params}, enc, dec_in, np.ones_like(dec_in))
    expected = np.argmax(np.asarray(logits), -1)
    for b in range(3):
        n = list(out[b]).index(1) + 1 if 1 in out[b] else 10
        np.testing.assert_array_equal(out[b, :n], expected[b, :n])


def test_kernel_block_sizes_come_from_gin(monkeypatch):
    """build_model.attention_block_sizes = @BlockSizes() reaches the Pallas kernel call."""
    import gin
    import flan_mix.configurables  # noqa: F401  (registers BlockSizes)
    from flan_mix.kernels import flash_attention
    from flan_mix.models.build import build_model
    gin.parse_config(["build_model.config = @T5Config()", "build_model.attention_impl = 'pallas'",
                      "build_model.attention_block_sizes = @BlockSizes()", "BlockSizes.block_q = 64",
                      "BlockSizes.block_k = 32", "T5Config.emb_dim = 32", "T5Config.num_heads = 2",
                      "T5Config.head_dim = 16", "T5Config.mlp_dim = 64", "T5Config.num_encoder_layers = 1",
                      "T5Config.num_decoder_layers = 1"])
    model = build_model(vocab_size=100)
    assert model.config.vocab_size == 128 and model.config.attention_impl == "pallas"
    seen = []
    real = flash_attention.flash_attention
    monkeypatch.setattr(flash_attention, "flash_attention",
                        lambda *a, **kw: seen.append(kw["block_sizes"]) or real(*a, **kw))
    batch = packed_batch(np.random.default_rng(0), batch=1, enc_len=16, dec_len=8)
    params = model.init_params(jax.random.PRNGKey(0))
    model.logits(params, batch)
    assert seen and all(b.block_q == 64 and b.block_k == 32 for b in seen)


def test_sampling_filters_hand_worked():
    """top-k, top-p and the padded-vocabulary mask on hand-made distributions."""
    from flan_mix.models import sampling
    from flan_mix.models.base import DecodingConfig
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    logits = jnp.log(jnp.asarray(probs, jnp.float32))
    draws = lambda cfg: {int(sampling.next_token(logits, jax.random.PRNGKey(i), cfg)[0]) for i in range(300)}
    assert draws(DecodingConfig(4, temperature=1.0, top_k=2)) == {0, 1}
    assert draws(DecodingConfig(4, temperature=1.0, top_p=0.7)) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert draws(DecodingConfig(4, temperature=1.0, top_p=0.5)) == {0}
    assert draws(DecodingConfig(4, temperature=1.0)) == {0, 1, 2, 3}
    # Padded ids (>= the tokenizer's size) are never chosen, greedy or sampled.
    padded = jnp.asarray([[0.0, 1.0, 9.0, 8.0]])
    assert int(sampling.next_token(padded, None, DecodingConfig(4, valid_vocab_size=2))[0]) == 1
    hot = jnp.asarray([[0.0, 0.0, 50.0, 50.0]])
    assert {int(sampling.next_token(hot, jax.random.PRNGKey(i), DecodingConfig(4, temperature=1.0,
                                                                             valid_vocab_size=2))[0])
            for i in range(50)} <= {0, 1}
    with pytest.raises(ValueError, match="top_p"):
        DecodingConfig(4, top_p=0.0)


def test_stop_strings_cut_at_the_earliest():
    from flan_mix.infer.decoding import cut_at_stop
    assert cut_at_stop("(B)\n\nQ: next", ["\n\nQ:", "\n\n"]) == "(B)"
    assert cut_at_stop("A: yes. Q: more", ["Q:", "yes"]) == "A: "
    assert cut_at_stop("nothing to cut", ["\n\n", ""]) == "nothing to cut"


def test_shared_encoder_option_scores_equal_full_rows(model_and_params):
    """EncoderDecoderModel.score_options (one encoder pass per prompt) equals the generic
    Model.score_options (every (prompt, option) row in full) and infer.scoring.score_pairs, with
    unequal option counts (masked slots are -inf) and batches split across prompts."""
    from flan_mix.infer.scoring import rank_options, score_pairs
    from flan_mix.models.base import Model
    from flan_mix.models.encoder_decoder import EncoderDecoderModel
    from flan_mix.runtime import partitioning
    module, params, _ = model_and_params
    model = EncoderDecoderModel(module.config)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(2, 100, n).astype(np.int32) for n in (5, 16, 9)]
    options = [[np.append(rng.integers(2, 100, m), 1).astype(np.int32) for m in lens]
               for lens in ((2,), (1, 3, 2), (4, 1))]
    batch = model.options_batch(prompts, options, num_options=3, inputs_length=16, targets_length=6)
    assert batch["encoder_input_tokens"].shape == (3, 16) and batch["decoder_target_tokens"].shape == (9, 6)
    shared = np.asarray(model.score_options(params, batch))
    generic_batch = Model.options_batch(model, prompts, options, num_options=3, inputs_length=16, targets_length=6)
    generic = np.asarray(Model.score_options(model, params, generic_batch))
    np.testing.assert_array_equal(np.isinf(shared), [[0, 1, 1], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(shared, generic, rtol=1e-5, atol=1e-5)
    mesh = partitioning.make_mesh(devices=jax.devices()[:1])
    pairs = score_pairs(model, params, [p for p, o in zip(prompts, options) for _ in o],
                        [x for o in options for x in o], mesh=mesh, inputs_length=16, targets_length=6,
                        batch_size=4)["sum_logprob"]
    ranked = rank_options(model, params, prompts, options, mesh=mesh, inputs_length=16, targets_length=6,
                          batch_size=2)
    np.testing.assert_allclose([v for r in ranked for v in r["logprobs"]], pairs, rtol=1e-5, atol=1e-5)
    assert [r["choice"] for r in ranked] == [int(np.argmax(r["logprobs"])) for r in ranked]

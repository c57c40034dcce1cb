"""Our T5 1.1 against HF transformers' T5ForConditionalGeneration on random weights, and the
HF checkpoint import/export of flan_mix.models.convert.

Peer: a tiny T5 1.1 built from a local T5Config (nothing is downloaded), eager attention, float32.

Tolerance. Both sides compute in float32 and differ only in summation order and fused ops, so
their logits differ by a few float32 ulps of the logit scale: |logits| reach ~52 here, where an
ulp is 3.8e-6, and we measure ~2.3e-5 (6 ulps). LOGIT_ATOL = 1e-4 is ~25 ulps at that scale. A real
discrepancy is orders of magnitude larger: test_logits_match_hf checks that changing one
log-spaced relative-position bucket by 1.0 moves the logits by more than 100 x LOGIT_ATOL.
"""
import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the HF peer tests need torch (CPU build is enough)")
transformers = pytest.importorskip("transformers", reason="the HF peer tests need HF transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from flan_mix.kernels import reference  # noqa: E402
from flan_mix.models import convert  # noqa: E402
from flan_mix.models.base import DecodingConfig  # noqa: E402
from flan_mix.models.encoder_decoder import EncoderDecoderModel  # noqa: E402
from flan_mix.models.t5 import T5Config, Transformer  # noqa: E402

LOGIT_ATOL = 1e-4
VOCAB, EMB, HEADS, HEAD_DIM, MLP, LAYERS = 128, 32, 2, 16, 64, 2
# Encoder rows reach distance 69 (> max_exact 8 of the 16 buckets per direction, and past the
# 16/32/64 log-bucket boundaries); decoder rows reach 39 (> max_exact 16 of the causal buckets).
ENC_LENS, ENC_LEN = (70, 45, 9), 72
DEC_LENS, DEC_LEN = (40, 23, 5), 40
MAX_DECODE_LEN = 16
OURS = T5Config(vocab_size=VOCAB, emb_dim=EMB, num_heads=HEADS, head_dim=HEAD_DIM, mlp_dim=MLP,
                num_encoder_layers=LAYERS, num_decoder_layers=LAYERS, dropout_rate=0.0)


def _hf_config():
    return transformers.T5Config(
        d_model=EMB, d_kv=HEAD_DIM, num_heads=HEADS, d_ff=MLP, num_layers=LAYERS, num_decoder_layers=LAYERS,
        vocab_size=VOCAB, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def _untied(model) -> bool:
    return model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = _hf_config()
    config._attn_implementation = "eager"  # the plain softmax(q k^T + bias) v path
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # transformers >= 5 ties lm_head to shared at construction even with tie_word_embeddings=False
        # (it unties only when loading a checkpoint holding both); give T5 1.1 its own output layer.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, EMB))
        # EOS (id 1) gets a long row so greedy decoding ends rows at different steps.
        model.lm_head.weight[1] *= 2.5
        for name, p in model.named_parameters():
            if "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)  # HF's init (std d_model**-0.5) would hide bucket mistakes
            elif "layer_norm" in name:
                p.uniform_(0.5, 1.5)  # HF's init (ones) would hide a dropped or swapped norm
    assert _untied(model)
    return model


def _np_state_dict(model):
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def params(hf_model):
    return convert.params_from_hf_state_dict(_np_state_dict(hf_model), LAYERS, LAYERS, HEADS, HEAD_DIM)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    enc_mask = (np.arange(ENC_LEN)[None] < np.array(ENC_LENS)[:, None]).astype(np.int32)
    dec_mask = (np.arange(DEC_LEN)[None] < np.array(DEC_LENS)[:, None]).astype(np.int32)
    enc = rng.integers(2, VOCAB, enc_mask.shape).astype(np.int32) * enc_mask
    targets = rng.integers(2, VOCAB, dec_mask.shape).astype(np.int32) * dec_mask
    dec_in = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1) * dec_mask
    return dict(enc=enc, enc_mask=enc_mask, targets=targets, dec_in=dec_in, dec_mask=dec_mask)


def _hf_logits(model, b):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(b["enc"], dtype=torch.long),
                    attention_mask=torch.tensor(b["enc_mask"], dtype=torch.long),
                    decoder_input_ids=torch.tensor(b["dec_in"], dtype=torch.long),
                    decoder_attention_mask=torch.tensor(b["dec_mask"], dtype=torch.long))
    return out.logits.numpy()


@jax.jit
def _our_forward(params, enc, dec_in, targets, enc_seg, dec_seg):
    return Transformer(OURS).apply({"params": params}, enc, dec_in, targets,
                                   encoder_segment_ids=enc_seg, decoder_segment_ids=dec_seg)


def _our_logits(params, b):
    return np.asarray(_our_forward(params, b["enc"], b["dec_in"], b["targets"], b["enc_mask"], b["dec_mask"]))


def _assert_same_tree(a, b, exact=True):
    flat_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    flat_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
    assert tree_a == tree_b
    for (path, x), (_, y) in zip(flat_a, flat_b):
        assert np.shape(x) == np.shape(y), jax.tree_util.keystr(path)
        if exact:
            assert np.asarray(x).dtype == np.asarray(y).dtype == np.float32, jax.tree_util.keystr(path)
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (32, 64), (16, 32)])
def test_relative_position_buckets_match_hf(num_buckets, max_distance):
    rel = np.arange(-300, 301)
    for bidirectional in (True, False):
        theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
            torch.tensor(rel), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
        ours = reference.relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional,
                                                  num_buckets=num_buckets, max_distance=max_distance)
        np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_converted_params_match_our_tree_and_export_back(hf_model, params, batch):
    model = Transformer(OURS)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch["enc"], batch["dec_in"],
                                               batch["targets"]))["params"]
    shapes = jax.tree_util.tree_map(lambda x: x.value if hasattr(x, "value") else x, shapes,
                                    is_leaf=lambda x: hasattr(x, "value"))
    _assert_same_tree(jax.tree_util.tree_map(lambda x: x.shape, shapes),
                      jax.tree_util.tree_map(lambda x: x.shape, params), exact=False)
    hf_sd = _np_state_dict(hf_model)
    back = convert.hf_state_dict_from_params(params, HEADS, HEAD_DIM)
    assert back.keys() == hf_sd.keys()
    for name, w in hf_sd.items():
        np.testing.assert_array_equal(back[name], w, err_msg=name)


def test_logits_match_hf(hf_model, params, batch):
    real = batch["dec_mask"].astype(bool)
    theirs = _hf_logits(hf_model, batch)[real]
    ours = _our_logits(params, batch)[real]
    diff = np.abs(ours - theirs).max()
    assert diff <= LOGIT_ATOL, f"max |ours - HF| = {diff:.3g} over {real.sum()} positions"
    # The long rows do reach the log-spaced buckets: bucket 14 holds past distances 64..90 and
    # bucket 30 the same distances ahead; only the 70-token row has them.
    bumped = copy.deepcopy(params)
    bumped["encoder"]["relpos_bias"]["rel_embedding"][:, [14, 30]] += 1.0
    moved = np.abs(_our_logits(bumped, batch)[real] - ours)
    assert moved.max() > 100 * LOGIT_ATOL


def test_greedy_decode_matches_hf_generate(hf_model, params, batch):
    enc, enc_mask = batch["enc"], batch["enc_mask"]
    with torch.no_grad():
        out = hf_model.generate(
            input_ids=torch.tensor(enc, dtype=torch.long), attention_mask=torch.tensor(enc_mask, dtype=torch.long),
            do_sample=False, num_beams=1, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
            max_new_tokens=MAX_DECODE_LEN, min_new_tokens=0, return_dict_in_generate=True, output_logits=True)
    theirs = out.sequences.numpy()
    assert (theirs[:, 0] == 0).all()  # HF returns the decoder start token first
    theirs = np.pad(theirs[:, 1:], ((0, 0), (0, MAX_DECODE_LEN + 1 - theirs.shape[1])))
    ours = np.asarray(EncoderDecoderModel(OURS).predict(params, {"inputs": jnp.asarray(enc)},
                                                        DecodingConfig(max_decode_len=MAX_DECODE_LEN)))
    np.testing.assert_array_equal(ours, theirs)
    # The comparison covers rows that stop at EOS at different steps and a row that runs to the
    # length limit (HF pads finished rows with 0, as we do).
    ends = [list(row).index(1) if 1 in row else None for row in theirs]
    assert None in ends and len({e for e in ends if e is not None}) >= 2, ends
    # Greedy choices were never near-ties, so float32 noise cannot have flipped an argmax.
    logits = torch.stack(out.logits, 1).numpy()
    top2 = np.sort(logits, axis=-1)[..., -2:]
    live = np.arange(logits.shape[1])[None] <= np.array([e if e is not None else 10**9 for e in ends])[:, None]
    assert (top2[..., 1] - top2[..., 0])[live].min() > 100 * LOGIT_ATOL


@pytest.mark.parametrize("max_shard_bytes", [None, 64 * 1024], ids=["single_file", "sharded"])
def test_export_round_trip(hf_model, params, batch, tmp_path, max_shard_bytes):
    written = convert.save_hf_checkpoint(params, OURS, tmp_path, max_shard_bytes=max_shard_bytes)
    if max_shard_bytes:
        assert os.path.isfile(tmp_path / convert.WEIGHTS_INDEX_NAME) and len(written) > 3
    reloaded, info = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert _untied(reloaded) and reloaded.config.decoder_start_token_id == 0
    np.testing.assert_array_equal(_hf_logits(reloaded, batch), _hf_logits(hf_model, batch))

    config, loaded = convert.load_hf_checkpoint(tmp_path)
    assert config == OURS
    _assert_same_tree(loaded, params)


def test_load_checkpoint_saved_by_transformers(hf_model, params, tmp_path):
    hf_model.save_pretrained(tmp_path / "f32")
    config, loaded = convert.load_hf_checkpoint(tmp_path / "f32")
    assert config == OURS
    _assert_same_tree(loaded, params)

    half = copy.deepcopy(hf_model).to(torch.bfloat16)
    half.save_pretrained(tmp_path / "bf16")
    _, loaded = convert.load_hf_checkpoint(tmp_path / "bf16")
    widened = convert.params_from_hf_state_dict(_np_state_dict(half), LAYERS, LAYERS, HEADS, HEAD_DIM)
    _assert_same_tree(loaded, widened)


def test_bad_checkpoints_name_the_file_and_tensor(params, tmp_path):
    convert.save_hf_checkpoint(params, OURS, tmp_path / "good")
    good = load_file(str(tmp_path / "good" / convert.WEIGHTS_NAME))
    config_text = (tmp_path / "good" / convert.CONFIG_NAME).read_text()

    def write(name, tensors, config=None):
        d = tmp_path / name
        d.mkdir()
        (d / convert.CONFIG_NAME).write_text(config or config_text)
        if tensors is not None:
            save_file(tensors, str(d / convert.WEIGHTS_NAME), metadata={"format": "pt"})
        return d

    gone = "decoder.block.1.layer.1.EncDecAttention.v.weight"
    d = write("missing", {k: v for k, v in good.items() if k != gone})
    with pytest.raises(convert.CheckpointError, match=rf"missing tensor.*{gone}") as e:
        convert.load_hf_checkpoint(d)
    assert str(d / convert.WEIGHTS_NAME) in str(e.value)

    bad = "decoder.block.1.layer.2.DenseReluDense.wi_0.weight"
    d = write("shape", {**good, bad: np.zeros((48, EMB), np.float32)})
    with pytest.raises(convert.CheckpointError, match=rf"{bad}.*\(48, 32\), expected \(64, 32\)") as e:
        convert.load_hf_checkpoint(d)
    assert str(d / convert.WEIGHTS_NAME) in str(e.value)

    d = write("extra", {**good, "encoder.block.2.layer.0.SelfAttention.q.weight": good[
        "encoder.block.1.layer.0.SelfAttention.q.weight"]})
    with pytest.raises(convert.CheckpointError, match=r"encoder\.block\.2\.layer\.0\.SelfAttention\.q\.weight"):
        convert.load_hf_checkpoint(d)

    d = write("no_weights", None)
    (d / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(convert.CheckpointError, match="Only safetensors"):
        convert.load_hf_checkpoint(d)

    # The state-dict entry point names the tensor too.
    sd = convert.hf_state_dict_from_params(params, HEADS, HEAD_DIM)
    sd["encoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((HEADS * HEAD_DIM, EMB + 1), np.float32)
    with pytest.raises(convert.CheckpointError, match=r"encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight"
                                                      r".*\(32, 33\), expected \(32, 32\)"):
        convert.params_from_hf_state_dict(sd, LAYERS, LAYERS, HEADS, HEAD_DIM)


def test_config_refuses_what_is_not_t5_1_1(tmp_path):
    base = convert.hf_config_from_t5_config(OURS)
    assert convert.t5_config_from_hf(base) == OURS
    # transformers >= 5 writes T5 1.1 as tie_word_embeddings=true, scale_decoder_outputs=false.
    assert convert.t5_config_from_hf({**base, "tie_word_embeddings": True, "scale_decoder_outputs": False}) == OURS
    with pytest.raises(convert.CheckpointError, match="gated-gelu"):
        convert.t5_config_from_hf({**base, "feed_forward_proj": "relu"})
    with pytest.raises(convert.CheckpointError, match="tie_word_embeddings"):
        convert.t5_config_from_hf({k: v for k, v in base.items() if k != "tie_word_embeddings"})
    with pytest.raises(convert.CheckpointError, match="umT5"):
        convert.t5_config_from_hf({**base, "model_type": "umt5"})
    (tmp_path / convert.CONFIG_NAME).write_text(json.dumps({**base, "feed_forward_proj": "relu"}))
    with pytest.raises(convert.CheckpointError, match=str(tmp_path / convert.CONFIG_NAME)):
        convert.load_hf_checkpoint(tmp_path)


def test_score_matches_hf_log_likelihoods(hf_model, params, batch):
    """Model.score: per-example sums and means of target log-probabilities, as HF computes them."""
    model = EncoderDecoderModel(OURS)
    ours = model.score(params, {"encoder_input_tokens": batch["enc"], "decoder_input_tokens": batch["dec_in"],
                                "decoder_target_tokens": batch["targets"],
                                "decoder_loss_weights": batch["dec_mask"]})
    logp = torch.log_softmax(torch.tensor(_hf_logits(hf_model, batch), dtype=torch.float64), dim=-1).numpy()
    token_logp = np.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0] * batch["dec_mask"]
    counts = batch["dec_mask"].sum(-1)
    np.testing.assert_array_equal(np.asarray(ours["num_tokens"]), counts)
    np.testing.assert_allclose(np.asarray(ours["sum_logprob"]), token_logp.sum(-1), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(ours["mean_logprob"]), token_logp.sum(-1) / counts, rtol=1e-5, atol=1e-4)
    # HF's own loss (mean token cross entropy with -100 on padding) is minus the mean log-likelihood.
    labels = np.where(batch["dec_mask"] == 1, batch["targets"], -100)
    for row in range(len(counts)):
        with torch.no_grad():
            out = hf_model(input_ids=torch.tensor(batch["enc"][row:row + 1], dtype=torch.long),
                           attention_mask=torch.tensor(batch["enc_mask"][row:row + 1], dtype=torch.long),
                           labels=torch.tensor(labels[row:row + 1, :counts[row]], dtype=torch.long))
        assert float(ours["mean_logprob"][row]) == pytest.approx(-float(out.loss), rel=1e-5, abs=1e-4)


def test_rank_classification_matches_hf(hf_model, params):
    """infer.scoring.rank_options: per-option log-likelihoods (EOS included) equal HF's to 1e-4,
    and the chosen option is HF's most likely one."""
    from flan_mix.infer.scoring import rank_options
    from flan_mix.runtime import partitioning
    rng = np.random.default_rng(7)
    prompts = [rng.integers(2, VOCAB, n).astype(np.int32) for n in (12, 30, 7)]
    options = [[np.append(rng.integers(2, VOCAB, m), 1).astype(np.int32) for m in lens]
               for lens in ((1, 3), (2, 2, 5), (4,))]
    mesh = partitioning.make_mesh(devices=jax.devices()[:1])
    ours = rank_options(EncoderDecoderModel(OURS), params, prompts, options, mesh=mesh, inputs_length=32,
                        targets_length=8, batch_size=4)
    for prompt, opts, result in zip(prompts, options, ours):
        theirs = []
        for opt in opts:
            with torch.no_grad():
                out = hf_model(input_ids=torch.tensor(prompt[None], dtype=torch.long),
                               labels=torch.tensor(opt[None], dtype=torch.long))
            theirs.append(-float(out.loss) * len(opt))  # HF's loss is the mean over the option's tokens
        np.testing.assert_allclose(result["logprobs"], theirs, atol=1e-4, rtol=1e-5)
        assert result["choice"] == int(np.argmax(theirs))

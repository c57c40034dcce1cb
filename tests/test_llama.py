"""The LLaMA decoder (models/llama.py, decoder_only.py, hf_llama.py) against HF transformers'
LlamaForCausalLM on random weights, plus its masks, KV-cached decoding, checkpoints and gin files.

Peer: a tiny LlamaForCausalLM built from a local config (nothing is downloaded), grouped-query
attention on (4 query heads, 2 kv heads), eager attention, float32; one variant unties the output
layer with the default RoPE, the other ties it and uses Llama 3's RoPE scaling with an original
context of 64 so that all three frequency bands (kept, smoothed, divided) occur.

Tolerance. Both sides compute in float32 and differ only in summation order and fused ops. Measured:
max |logit diff| 8e-6 untied (|logits| up to 8) and 4e-5 tied (|logits| up to 37, where a float32
ulp is 3.8e-6: ~10 ulps). LOGIT_ATOL = 1e-4 sits above both; a real mistake (a dropped norm, a
swapped kv head, a wrong RoPE band) moves the logits by O(1).
"""
import dataclasses
import functools
import json
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the HF peer tests need torch (CPU build is enough)")
transformers = pytest.importorskip("transformers", reason="the HF peer tests need HF transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from flan_mix.models import convert, hf_llama  # noqa: E402
from flan_mix.models.base import DecodingConfig  # noqa: E402
from flan_mix.models.decoder_only import DecoderOnlyModel, beam_decode  # noqa: E402
from flan_mix.models.llama import Llama3RopeScaling, LlamaConfig, rope_frequencies  # noqa: E402

LOGIT_ATOL = 1e-4
VOCAB, EMB, LAYERS, HEADS, KV_HEADS, HEAD_DIM, MLP = 300, 64, 2, 4, 2, 16, 128
BOS, EOS = 1, 2  # HF Llama's ids; ours are configurable
SCALING = Llama3RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=64)
VARIANTS = {
    "untied": LlamaConfig(vocab_size=VOCAB, emb_dim=EMB, num_layers=LAYERS, num_heads=HEADS, num_kv_heads=KV_HEADS,
                          head_dim=HEAD_DIM, mlp_dim=MLP, rope_theta=10000.0, norm_eps=1e-5, bos_id=BOS, eos_id=EOS),
}
VARIANTS["tied_llama3"] = dataclasses.replace(VARIANTS["untied"], tie_embeddings=True, rope_theta=500000.0,
                                              rope_scaling=SCALING)
OURS = VARIANTS["untied"]


def _hf_model(cfg: LlamaConfig, seed: int):
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        rope.update(rope_type="llama3", **dataclasses.asdict(cfg.rope_scaling))
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=EMB, intermediate_size=MLP, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings, rope_parameters=rope, bos_token_id=BOS, eos_token_id=EOS,
        pad_token_id=0, max_position_embeddings=256)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # HF's init (std 0.02, norms at 1) gives near-uniform logits: greedy choices would be near-ties
        # and a dropped norm would go unseen. Scale everything to O(1) activations instead.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif "embed_tokens" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 1.5 / np.sqrt(p.shape[1]))
        model.lm_head.weight[EOS] *= 1.5  # so that greedy rows end at EOS at different steps
    assert (model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()) == cfg.tie_embeddings
    return model


def nn_unbox(tree):
    return nn.meta.unbox(tree)


def _np_state_dict(model):
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


@functools.cache
def _peer(variant: str):
    """(our config, HF model, our params imported from its state dict)."""
    cfg = VARIANTS[variant]
    model = _hf_model(cfg, seed=0)
    return cfg, model, hf_llama.params_from_hf_state_dict(_np_state_dict(model), cfg)


@pytest.fixture(scope="module", params=list(VARIANTS))
def peer(request):
    return _peer(request.param)


@pytest.fixture(scope="module")
def untied():
    """The tests of our own masks and decoding need one set of weights."""
    return _peer("untied")


def _hf_logits(model, ids, mask=None):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=None if mask is None else torch.tensor(mask, dtype=torch.long))
    return out.logits.numpy()


def _our_logits(cfg, params, batch):
    return np.asarray(jax.jit(DecoderOnlyModel(cfg).logits)(params, batch))


def _pairs(rng, in_lens, tgt_lens, vocab=VOCAB):
    return ([rng.integers(3, vocab, n).astype(np.int32) for n in in_lens],
            [rng.integers(3, vocab, n).astype(np.int32) for n in tgt_lens])


# ----------------------------------------------------------------------------------------------
# Forward pass.

def test_rope_frequencies_match_hf():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    # Llama 3.2 1B's published RoPE (gin/models/llama_1b.gin).
    hf_cfg = transformers.LlamaConfig(hidden_size=2048, num_attention_heads=32, head_dim=64,
                                      max_position_embeddings=131072, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    theirs = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")[0].numpy()
    ours = rope_frequencies(64, 500000.0, Llama3RopeScaling())
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert not np.allclose(ours, rope_frequencies(64, 500000.0))  # the scaling did something


def test_logits_match_hf(peer):
    cfg, hf_model, params = peer
    rng = np.random.default_rng(0)
    lens, length = (40, 23, 7), 40
    mask = (np.arange(length)[None] < np.array(lens)[:, None]).astype(np.int32)
    ids = rng.integers(3, VOCAB, mask.shape).astype(np.int32) * mask
    theirs = _hf_logits(hf_model, ids, mask)
    # Our layout: the target of position t is the input of t + 1; padding is segment 0.
    targets = np.concatenate([ids[:, 1:], np.zeros_like(ids[:, :1])], 1) * mask
    ours = _our_logits(cfg, params, {"decoder_input_tokens": ids, "decoder_target_tokens": targets,
                                     "decoder_loss_weights": mask, "decoder_segment_ids": mask})
    real = mask.astype(bool)
    diff = np.abs(ours[real] - theirs[real])
    print(f"max |logit diff| vs HF ({'tied' if cfg.tie_embeddings else 'untied'}): {diff.max():.2e}, "
          f"max |logit| {np.abs(theirs[real]).max():.1f}")
    assert diff.max() < LOGIT_ATOL
    assert np.abs(theirs[real]).max() > 5  # the weights are not so small that anything would match


def test_score_is_minus_hf_loss_sum(peer):
    cfg, hf_model, params = peer
    inputs, targets = _pairs(np.random.default_rng(1), (9, 3, 14), (5, 1, 8))
    model = DecoderOnlyModel(cfg)
    batch = model.unpacked_batch(inputs, targets, inputs_length=16, targets_length=8)
    ours = jax.jit(model.score)(params, batch)
    np.testing.assert_array_equal(np.asarray(ours["num_tokens"]), [5, 1, 8])
    for row, (inp, tgt) in enumerate(zip(inputs, targets)):
        ids = np.concatenate([[BOS], inp, tgt])
        labels = np.concatenate([np.full(1 + len(inp), -100), tgt])
        with torch.no_grad():
            out = hf_model(input_ids=torch.tensor(ids[None], dtype=torch.long),
                           labels=torch.tensor(labels[None], dtype=torch.long))
        assert float(ours["sum_logprob"][row]) == pytest.approx(-float(out.loss) * len(tgt), rel=1e-5, abs=1e-4)


def test_packed_segments_match_each_example_alone(untied):
    """Two examples in one row (positions restarting at 0) give each example's own logits, in both modes."""
    cfg, _, params = untied
    inputs, targets = _pairs(np.random.default_rng(2), (6, 9), (5, 4))
    for mode in (dataclasses.replace(cfg, prefix_lm=False), dataclasses.replace(cfg, prefix_lm=True)):
        model = DecoderOnlyModel(mode)
        alone = [model.unpacked_batch([i], [t], inputs_length=12, targets_length=6) for i, t in zip(inputs, targets)]
        lens = [len(i) + len(t) for i, t in zip(inputs, targets)]
        packed = {k: np.zeros((1, 32), np.int32) for k in alone[0]}
        packed["decoder_segment_ids"] = np.zeros((1, 32), np.int32)
        packed["decoder_positions"] = np.zeros((1, 32), np.int32)
        start = 0
        for seg, (b, n) in enumerate(zip(alone, lens), start=1):
            for k in b:
                packed[k][0, start:start + n] = b[k][0, :n]
            packed["decoder_segment_ids"][0, start:start + n] = seg
            packed["decoder_positions"][0, start:start + n] = np.arange(n)
            start += n
        got = _our_logits(mode, params, packed)[0]
        start = 0
        for b, n in zip(alone, lens):
            want = _our_logits(mode, params, b)[0, :n]
            np.testing.assert_allclose(got[start:start + n], want, atol=LOGIT_ATOL, rtol=0)
            start += n


def test_prefix_lm_masks(untied):
    """Prefix-LM: a later input token reaches an earlier input position; a target token never
    reaches an earlier position. Plain LM: nothing later reaches anything earlier."""
    cfg, _, params = untied
    inputs, targets = _pairs(np.random.default_rng(3), (8,), (6,))
    for prefix_lm in (True, False):
        mode = dataclasses.replace(cfg, prefix_lm=prefix_lm)
        batch = DecoderOnlyModel(mode).unpacked_batch(inputs, targets, inputs_length=8, targets_length=6)
        base = _our_logits(mode, params, batch)[0]
        later_input = {**batch, "decoder_input_tokens": batch["decoder_input_tokens"].copy()}
        later_input["decoder_input_tokens"][0, 8] = (later_input["decoder_input_tokens"][0, 8] + 1) % VOCAB  # x8
        moved = np.abs(_our_logits(mode, params, later_input)[0] - base).max(-1)
        if prefix_lm:
            assert moved[1] > 100 * LOGIT_ATOL  # the position reading x1 sees x8
        else:
            assert moved[:8].max() == 0.0
        later_target = {**batch, "decoder_input_tokens": batch["decoder_input_tokens"].copy()}
        later_target["decoder_input_tokens"][0, 11] = 5  # y3 (input position 9 holds y1)
        moved = np.abs(_our_logits(mode, params, later_target)[0] - base).max(-1)
        assert moved[:11].max() == 0.0 and moved[11] > 100 * LOGIT_ATOL


def test_logical_axes_and_gqa_shapes():
    model = DecoderOnlyModel(dataclasses.replace(OURS, tie_embeddings=True))
    specs = jax.tree_util.tree_map(lambda x: x.names, model.abstract_params(),
                                   is_leaf=lambda x: hasattr(x, "names"))
    assert specs["layer_0"]["attention"]["key"]["kernel"] == ("embed", "heads", "kv")
    assert specs["layer_0"]["attention"]["out"]["kernel"] == ("heads", "kv", "embed")
    assert specs["layer_1"]["mlp"]["wo"]["kernel"] == ("mlp", "embed")
    assert specs["token_embed"]["embedding"] == ("vocab", "embed")
    assert specs["final_norm"]["scale"] == ("embed",)
    shapes = jax.tree_util.tree_map(lambda x: x.shape, nn_unbox(model.abstract_params()))
    assert shapes["layer_0"]["attention"]["key"]["kernel"] == (EMB, KV_HEADS, HEAD_DIM)
    assert "logits_dense" not in shapes  # tied: the embedding is the output layer


def test_config_errors():
    with pytest.raises(ValueError, match="num_heads=6 is not divisible by num_kv_heads=4"):
        LlamaConfig(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="head_dim=7 is odd"):
        LlamaConfig(head_dim=7)


# ----------------------------------------------------------------------------------------------
# Decoding.

def test_greedy_decode_matches_hf_generate(peer):
    """Prompts of different lengths decoded in one batch (left-padded inside predict) give HF's
    greedy ids for each prompt generated alone."""
    cfg, hf_model, params = peer
    prompts, _ = _pairs(np.random.default_rng(4), (11, 4, 8), ())
    max_len = 12
    ours = np.asarray(DecoderOnlyModel(cfg).predict(
        params, {"inputs": np.stack([np.pad(p, (0, 11 - len(p))) for p in prompts])},
        DecodingConfig(max_decode_len=max_len)))
    ends, gaps = [], []
    for row, prompt in enumerate(prompts):
        ids = torch.tensor(np.concatenate([[BOS], prompt])[None], dtype=torch.long)
        with torch.no_grad():
            out = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    num_beams=1, max_new_tokens=max_len, eos_token_id=EOS, pad_token_id=0,
                                    return_dict_in_generate=True, output_logits=True)
        theirs = out.sequences[0, ids.shape[1]:].numpy()
        np.testing.assert_array_equal(ours[row], np.pad(theirs, (0, max_len - len(theirs))))
        ends.append(len(theirs) if theirs[-1] == EOS else None)
        top2 = np.sort(torch.stack(out.logits, 1)[0].numpy(), -1)[:, -2:]
        gaps.append((top2[:, 1] - top2[:, 0]).min())
    # Greedy choices were never near-ties, so float32 noise cannot have flipped an argmax.
    assert min(gaps) > 100 * LOGIT_ATOL, gaps
    print(f"greedy ends per row: {ends}")


@pytest.mark.parametrize("prefix_lm", [False, True], ids=["lm", "prefix_lm"])
def test_cached_decoding_matches_teacher_forcing(untied, prefix_lm):
    """Every token of a KV-cached decode (greedy, batched prompts of different lengths) is the argmax
    of a full teacher-forced pass over prompt + generated ids, in either mode; sampling with a
    valid_vocab_size never leaves it."""
    cfg, _, params = untied
    cfg = dataclasses.replace(cfg, prefix_lm=prefix_lm, eos_id=1, bos_id=0)  # our SentencePiece ids
    model = DecoderOnlyModel(cfg)
    prompts, _ = _pairs(np.random.default_rng(5), (3, 10, 6), ())
    padded = np.stack([np.pad(p, (0, 10 - len(p))) for p in prompts])
    out = np.asarray(model.predict(params, {"inputs": padded}, DecodingConfig(max_decode_len=8)))
    batch = model.unpacked_batch(prompts, list(out), inputs_length=10, targets_length=8)
    expected = np.argmax(_our_logits(cfg, params, batch), -1)
    for row, prompt in enumerate(prompts):
        n = list(out[row]).index(1) + 1 if 1 in out[row] else 8
        assert (out[row, :n] != 0).all() and (out[row, n:] == 0).all()
        # Position len(prompt) reads the prompt's last token (position 0 reads BOS).
        np.testing.assert_array_equal(out[row, :n], expected[row, len(prompt):len(prompt) + n])
    sampled = np.asarray(model.predict(params, {"inputs": padded}, DecodingConfig(
        max_decode_len=8, temperature=1.0, top_k=50, top_p=0.9, valid_vocab_size=40), rng=jax.random.PRNGKey(1)))
    assert sampled.max() < 40


def test_beam_search_scores_are_model_scores(untied):
    """The best beam's score is the log-likelihood Model.score gives its ids, and beats greedy's."""
    cfg, _, params = untied
    model = DecoderOnlyModel(cfg)
    prompts, _ = _pairs(np.random.default_rng(6), (5, 9), ())
    padded = np.stack([np.pad(p, (0, 9 - len(p))) for p in prompts])
    decoding = DecodingConfig(max_decode_len=6, num_beams=3)
    ids, scores = beam_decode(model.module, params, jnp.asarray(padded), decoding=decoding)
    best = np.asarray(ids[:, 0])
    np.testing.assert_array_equal(np.asarray(model.predict(params, {"inputs": padded}, decoding)), best)
    greedy = np.asarray(model.predict(params, {"inputs": padded}, DecodingConfig(max_decode_len=6)))
    score = lambda out: np.asarray(model.score(params, model.unpacked_batch(
        prompts, list(out), inputs_length=9, targets_length=6))["sum_logprob"])
    np.testing.assert_allclose(np.asarray(scores[:, 0]), score(best), atol=1e-4)
    assert (score(best) >= score(greedy) - 1e-4).all()


# ----------------------------------------------------------------------------------------------
# Checkpoints.

@pytest.mark.parametrize("max_shard_bytes", [None, 64 * 1024], ids=["single_file", "sharded"])
def test_export_round_trip(peer, tmp_path, max_shard_bytes):
    cfg, hf_model, params = peer
    written = convert.save_hf_checkpoint(params, cfg, tmp_path, max_shard_bytes=max_shard_bytes)
    if max_shard_bytes:
        assert os.path.isfile(tmp_path / convert.WEIGHTS_INDEX_NAME) and len(written) > 3
    reloaded, info = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager",
                                                                  output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ids = np.random.default_rng(7).integers(3, VOCAB, (2, 20))
    np.testing.assert_array_equal(_hf_logits(reloaded.eval(), ids), _hf_logits(hf_model, ids))

    config, loaded = convert.load_hf_checkpoint(tmp_path)  # dispatches on model_type "llama"
    assert config == cfg
    flat, tree = jax.tree_util.tree_flatten_with_path(loaded)
    assert tree == jax.tree_util.tree_structure(params)
    for (path, x), y in zip(flat, jax.tree_util.tree_leaves(params)):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    # The gin written beside an import rebuilds the same config through build_model.
    from flan_mix.models.build import build_model
    gin.parse_config(convert.gin_bindings(config, source=str(tmp_path)))
    assert build_model().config == config


def test_load_checkpoint_saved_by_transformers(peer, tmp_path):
    cfg, hf_model, params = peer
    hf_model.save_pretrained(tmp_path)
    config, loaded = convert.load_hf_checkpoint(tmp_path)
    assert config == cfg
    for x, y in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(x, y)


def test_bad_checkpoints_name_the_tensor_and_shapes(untied, tmp_path):
    cfg, _, params = untied
    convert.save_hf_checkpoint(params, cfg, tmp_path / "good")
    good = load_file(str(tmp_path / "good" / convert.WEIGHTS_NAME))
    config_json = json.loads((tmp_path / "good" / convert.CONFIG_NAME).read_text())

    def write(name, tensors, **config_changes):
        d = tmp_path / name
        d.mkdir()
        (d / convert.CONFIG_NAME).write_text(json.dumps({**config_json, **config_changes}))
        save_file(tensors, str(d / convert.WEIGHTS_NAME), metadata={"format": "pt"})
        return d

    # Another shape: a checkpoint with 4 kv heads read as the 2 its config.json claims.
    bad = "model.layers.1.self_attn.k_proj.weight"
    d = write("shape", {**good, bad: np.zeros((HEADS * HEAD_DIM, EMB), np.float32)})
    with pytest.raises(convert.CheckpointError, match=rf"{bad}.*\(64, 64\), expected \(32, 64\)") as e:
        convert.load_hf_checkpoint(d)
    assert str(d / convert.WEIGHTS_NAME) in str(e.value)
    # Another architecture: biases (Qwen2-style), a different activation, another model_type.
    d = write("bias", {**good, "model.layers.0.self_attn.q_proj.bias": np.zeros(HEADS * HEAD_DIM, np.float32)})
    with pytest.raises(convert.CheckpointError, match=r"q_proj\.bias.*Biases"):
        convert.load_hf_checkpoint(d)
    with pytest.raises(convert.CheckpointError, match="hidden_act='gelu'"):
        convert.load_hf_checkpoint(write("act", good, hidden_act="gelu"))
    with pytest.raises(convert.CheckpointError, match="model_type='mistral'"):
        convert.load_hf_checkpoint(write("mistral", good, model_type="mistral"))
    gone = {k: v for k, v in good.items() if k != "lm_head.weight"}
    with pytest.raises(convert.CheckpointError, match="lm_head.weight.*tie_word_embeddings=false"):
        convert.load_hf_checkpoint(write("untied_without_head", gone))
    with pytest.raises(convert.CheckpointError, match="num_heads=4 is not divisible by num_kv_heads=3"):
        convert.load_hf_checkpoint(write("gqa", good, num_key_value_heads=3))
    # The state-dict entry point names the tensor and both shapes too.
    sd = hf_llama.hf_state_dict_from_params(params, cfg)
    sd["model.layers.0.mlp.up_proj.weight"] = np.zeros((MLP + 1, EMB), np.float32)
    with pytest.raises(convert.CheckpointError, match=r"up_proj\.weight.*\(129, 64\), expected \(128, 64\)"):
        hf_llama.params_from_hf_state_dict(sd, cfg)


# ----------------------------------------------------------------------------------------------
# Building and training.

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin", "models")


@pytest.mark.parametrize("name,vocab,params_count", [
    ("llama_tiny", 100, None),
    ("llama_1b", None, 1_235_814_400),  # Llama 3.2 1B as published (tied embeddings)
    ("llama_7b", None, 6_738_415_616),  # Llama 2 7B as published
])
def test_gin_files_build_the_published_shapes(name, vocab, params_count):
    import flan_mix.configurables  # noqa: F401  (registers every configurable)
    from flan_mix.models.build import build_model
    gin.parse_config_file(os.path.join(GIN_DIR, f"{name}.gin"))
    model = build_model(vocab_size=vocab)
    assert isinstance(model, DecoderOnlyModel)
    shapes = nn_unbox(model.abstract_params())  # shapes only, nothing allocated
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    if params_count is None:
        assert model.config.vocab_size == 128  # padded like T5's
        print(f"{name}: {count:,} parameters")
    else:
        assert count == params_count


def test_loss_falls_on_a_fixed_batch():
    """A few train steps of the tiny prefix-LM decoder through the Model interface and the Trainer."""
    from flan_mix.runtime import partitioning
    from flan_mix.train import optim
    from flan_mix.train.trainer import Trainer
    model = DecoderOnlyModel(LlamaConfig(vocab_size=128, emb_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                         head_dim=8, mlp_dim=64, prefix_lm=True))
    inputs, targets = _pairs(np.random.default_rng(8), (7, 12, 3, 9), (5, 3, 8, 4), vocab=128)
    batch = model.unpacked_batch(inputs, targets, inputs_length=12, targets_length=8)
    tx, schedule = optim.make_optimizer("adafactor", optim.make_schedule("constant", 1e-2, warmup_steps=0))
    trainer = Trainer(model, tx, partitioning.make_mesh(devices=jax.devices()[:1]),
                      partitioning.logical_axis_rules(), schedule=schedule)
    state = trainer.init_state(0)
    step = trainer.compile_train_step(trainer.abstract_state()[1], dropout=False)
    losses = []
    for _ in range(8):
        state, metrics = trainer.run_step(step, state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses
    assert model.count_tokens(batch) == sum(map(len, inputs)) + sum(map(len, targets))


def test_pallas_kernel_trains_the_decoder_like_xla(untied):
    """The decoder on the Pallas kernel (interpret mode): loss and every parameter gradient equal
    the XLA path on packed prefix-LM rows from the data side's packer (GQA, segments, prefixes)."""
    from flan_mix.data import decoder_packing
    cfg, _, params = untied
    rng = np.random.default_rng(11)
    examples = [(rng.integers(3, VOCAB, n).astype(np.int32), np.append(rng.integers(3, VOCAB, m), EOS).astype(np.int32))
                for n, m in ((5, 2), (9, 4), (3, 1), (12, 5), (4, 3))]
    batch = next(decoder_packing.pack_decoder_batches(examples, "prefix_lm", {"inputs": 14, "targets": 6}, 2,
                                                      max_open_rows=2, bos_id=BOS))
    assert batch["decoder_segment_ids"].max() >= 2 and batch["decoder_causal_attention"].any()
    results = {}
    for impl in ("xla", "pallas"):
        model = DecoderOnlyModel(dataclasses.replace(cfg, prefix_lm=True, attention_impl=impl))
        (loss, _), grads = jax.value_and_grad(lambda p: model.loss(p, batch), has_aux=True)(params)
        results[impl] = (float(loss), grads)
    assert results["pallas"][0] == pytest.approx(results["xla"][0], rel=1e-5)
    flat_x = jax.tree_util.tree_leaves_with_path(results["xla"][1])
    flat_p = jax.tree_util.tree_leaves(results["pallas"][1])
    for (path, gx), gp in zip(flat_x, flat_p):
        np.testing.assert_allclose(np.asarray(gp), np.asarray(gx), atol=2e-5, rtol=1e-4,
                                   err_msg=jax.tree_util.keystr(path))

"""The decoder-only pieces of benchmarks/gpu_suite.py: the LLaMA-style train step it times.

What lives here (gpu_suite.py runs it, under its own deadlines):
  * DecoderDims: the LLaMA shape timed (LLAMA_1B = gin/models/llama_1b.gin's Llama 3.2 1B;
    LLAMA_TINY for --small), mapped onto flan_mix.models.llama.LlamaConfig in one place;
  * segment_prefix_flags: the per-segment prefixes of the kernel's prefix-LM correctness cases;
  * synthetic_prefix_lm_batch: packed prefix-LM rows with the features of flan_mix.data's
    'prefix_lm' packer (seqio's PrefixLMFeatureConverter), built with numpy here because the GPU
    machines have neither TensorFlow nor seqio, and flan_mix.data imports stay off them;
  * build_decoder_train_step: DecoderOnlyModel (prefix_lm=True) through the Trainer;
  * the parameter and FLOP counts behind the decoder row's MFU;
  * decoder_attention_summary: the decoder attention rows' ratios (pallas vs cuDNN / XLA).

Nothing here imports gpu_suite (it runs as __main__; importing it again would make a second copy
of the module), TensorFlow, seqio or flan_mix.data.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DecoderDims:
    """The LLaMA shape the suite times; build_decoder_train_step maps it onto LlamaConfig."""
    name: str
    vocab: int
    emb: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    tied: bool
    rope_theta: float = 10000.0
    llama3_rope: bool = False   # Llama 3's frequency scaling: changes values, not the cost
    bos_id: int = 0
    eos_id: int = 1


# gin/models/llama_1b.gin (Llama 3.2 1B): 1,235,814,400 parameters, a quarter of them the tied
# 128256 x 2048 embedding, so the logits matmul is a large share of the step.
LLAMA_1B = DecoderDims("llama_3_2_1b", vocab=128256, emb=2048, layers=16, heads=32, kv_heads=8,
                       head_dim=64, mlp=8192, tied=True, rope_theta=500000.0, llama3_rope=True,
                       bos_id=128000, eos_id=128001)
# --small: one layer (a CPU train-step compile costs seconds per layer), still GQA (4 query heads
# on 2 kv heads), so the CPU run exercises the grouped kernel path and the prefix mask inside
# the model.
LLAMA_TINY = DecoderDims("llama_tiny", vocab=256, emb=64, layers=1, heads=4, kv_heads=2,
                         head_dim=16, mlp=128, tied=False)


# ----------------------------------------------------------------------------- batch


def synthetic_prefix_lm_batch(rng: np.random.Generator, batch: int, length: int, vocab: int,
                              bos_id: int = 0, eos_id: int = 1) -> dict[str, np.ndarray]:
    """Packed prefix-LM rows with the features DecoderOnlyModel reads (seqio's names).

    Each row packs examples of 1/16..1/2 of the row until the next would not fit; the rest is
    padding. An example is inputs (25-90% of it, at least one token) ++ targets (ending in EOS):
      decoder_target_tokens     x1 .. xn y1 .. ym
      decoder_input_tokens      BOS x1 .. xn y1 .. y(m-1)     (shifted within the segment)
      decoder_loss_weights      1 on y1 .. ym
      decoder_causal_attention  1 on the first n + 1 positions (BOS and the inputs)
      decoder_segment_ids 1, 2, ...; decoder_positions 0, 1, ... restarting per segment.
    Token ids avoid 0 (padding), 1, and the BOS/EOS ids when they sit above the ordinary ids
    (Llama 3's specials start at 128000).
    """
    specials = [i for i in (bos_id, eos_id) if i > 2]
    high = min([vocab] + specials)
    names = ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
             "decoder_causal_attention", "decoder_segment_ids", "decoder_positions")
    out = {k: np.zeros((batch, length), np.int32) for k in names}
    for b in range(batch):
        pos = 0
        for seg in range(1, 10_000):
            n = int(rng.integers(max(2, length // 16), max(3, length // 2)))
            if pos + n > length:
                break
            n_in = min(n - 1, max(1, int(n * rng.uniform(0.25, 0.9))))
            tokens = rng.integers(2, high, n)
            tokens[-1] = eos_id
            s = slice(pos, pos + n)
            out["decoder_target_tokens"][b, s] = tokens
            out["decoder_input_tokens"][b, s] = np.concatenate([[bos_id], tokens[:-1]])
            out["decoder_loss_weights"][b, pos + n_in:pos + n] = 1
            out["decoder_causal_attention"][b, pos:pos + n_in + 1] = 1
            out["decoder_segment_ids"][b, s] = seg
            out["decoder_positions"][b, s] = np.arange(n)
            pos += n
    return out


def segment_prefix_flags(rng: np.random.Generator, segment_ids: np.ndarray):
    """int32 numpy prefix-LM flags [B, L], one prefix per segment, counting segments over the batch:
    every 4th gets none (a plain causal segment), the one after it all of itself (bidirectional),
    the others a random 1..n-1 tokens (a prompt before its response). Padding stays unflagged,
    as the decoder packer leaves it."""
    flags = np.zeros(segment_ids.shape, np.int32)
    count = 0
    for b in range(segment_ids.shape[0]):
        for seg in np.unique(segment_ids[b][segment_ids[b] > 0]):
            where = np.flatnonzero(segment_ids[b] == seg)
            n = len(where)
            size = {0: 0, 1: n}.get(count % 4, int(rng.integers(1, n)) if n > 1 else n)
            flags[b, where[:size]] = 1
            count += 1
    return flags


# ----------------------------------------------------------------------------- train step


def build_decoder_train_step(dims: DecoderDims, batch_size: int, length: int,
                             attention_impl: str, seed: int = 0):
    """THE DECODER ROW'S ONLY USE OF THE TRAINING API (adapt it when that API changes), as
    gpu_suite.build_train_step is the T5 row's.

    Returns (step_fn, state, device_batch): step_fn(state, device_batch) -> (state, metrics) runs
    one jitted fwd + bwd + AdamW update (old state donated) of DecoderOnlyModel in prefix-LM mode
    with bf16 activations (parameters f32); device_batch is synthetic packed prefix-LM rows.
    AdamW, not the T5 row's Adafactor: it is what LLaMA-style SFT runs.
    """
    import flax.linen as nn
    from flan_mix.models.build import build_model
    from flan_mix.models.llama import Llama3RopeScaling, LlamaConfig
    from flan_mix.runtime import partitioning
    from flan_mix.train import optim
    from flan_mix.train.trainer import Trainer

    config = LlamaConfig(vocab_size=dims.vocab, emb_dim=dims.emb, num_layers=dims.layers,
                         num_heads=dims.heads, num_kv_heads=dims.kv_heads,
                         head_dim=dims.head_dim, mlp_dim=dims.mlp, rope_theta=dims.rope_theta,
                         rope_scaling=Llama3RopeScaling() if dims.llama3_rope else None,
                         tie_embeddings=dims.tied, prefix_lm=True, bos_id=dims.bos_id,
                         eos_id=dims.eos_id, dtype="bfloat16")
    tx, schedule = optim.make_optimizer("adamw", optim.make_schedule("constant", 1e-4))
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules()
    model = build_model(config, attention_impl=attention_impl)
    trainer = Trainer(model, tx, mesh, rules, schedule=schedule)
    host_batch = synthetic_prefix_lm_batch(np.random.default_rng(seed), batch_size, length,
                                           dims.vocab, dims.bos_id, dims.eos_id)
    # Only the features the model reads: a feature it ignores would still be a jit argument.
    host_batch = {k: host_batch[k] for k in model.FEATURES}
    _, shardings = trainer.abstract_state()
    state = trainer.init_state(seed)
    compiled = trainer.compile_train_step(shardings, dropout=False)
    device_batch = partitioning.host_batch_to_global(host_batch, mesh)

    def step_fn(state, device_batch):
        with mesh, nn.logical_axis_rules(rules):
            return compiled(state, device_batch)
    return step_fn, state, device_batch


# ----------------------------------------------------------------------------- counts


def matmul_params(dims: DecoderDims) -> int:
    """Parameters of the matmuls every position runs through (embedding lookup excluded).

    Per layer: q and o (2 * emb * heads * head_dim), k and v (2 * emb * kv_heads * head_dim),
    SwiGLU gate, up and down (3 * emb * mlp). Plus the logits, emb * vocab, whether that matrix
    is its own or the tied embedding (the multiply happens either way).
    """
    attn = 2 * dims.emb * dims.head_dim * (dims.heads + dims.kv_heads)
    return dims.layers * (attn + 3 * dims.emb * dims.mlp) + dims.emb * dims.vocab


def expected_param_count(dims: DecoderDims) -> int:
    """All parameters: matmuls + the embedding when untied (tied: the logits matrix is it) +
    RMSNorm scales (2 per layer, 1 final). Checked against the built model."""
    untied_embedding = 0 if dims.tied else dims.vocab * dims.emb
    return matmul_params(dims) + untied_embedding + dims.emb * (2 * dims.layers + 1)


def train_step_flops(dims: DecoderDims, batch: int, length: int) -> dict[str, float]:
    """Model FLOPs of one train step (fwd + bwd): 6 * matmul params * tokens + attention.

    dense     = 6 * P * B * L, P = matmul_params (embedding lookup and norms not counted): 2 FLOPs
                per multiply-add forward, 4 backward.
    attention = 12 * B * layers * heads * head_dim * L^2: q k^T and p v, 2 * L^2 * heads *
                head_dim FLOPs each forward, x3 with the backward, over the query heads (GQA
                shares k/v, not this work). Counted dense, as the T5 row does (PaLM's MFU
                convention): the causal half, the prefix and the cross-segment pairs of packed
                rows are all included, and the flash kernel's backward recomputation is not.
    Every position counts, padding included (the step computes it); the fill is reported beside.
    """
    tokens = batch * length
    dense = 6.0 * matmul_params(dims) * tokens
    attn = 12.0 * batch * dims.layers * dims.heads * dims.head_dim * length ** 2
    return dict(dense=dense, attention=attn, total=dense + attn)


# ----------------------------------------------------------------------------- attention rows


def decoder_attention_summary(rows) -> list[str]:
    """The decoder attention rows as ratios: GQA causal pallas vs cuDNN (the fastest fused kernel
    that can run it), prefix-LM packed pallas vs XLA (nothing else can run it)."""
    def get(scenario, impl, length, head_dim):
        for r in rows:
            if (r["scenario"], r["impl"], r["length"], r["head_dim"]) == (
                    scenario, impl, length, head_dim) and r.get("fwd_bwd_ms"):
                return r["fwd_bwd_ms"]
        return None

    lines = []
    for length, head_dim in sorted({(r["length"], r["head_dim"]) for r in rows
                                    if r["scenario"] in ("gqa_causal", "prefix_lm")}):
        ours, cudnn = get("gqa_causal", "pallas", length, head_dim), \
            get("gqa_causal", "cudnn", length, head_dim)
        if ours and cudnn:
            lines.append(f"gqa_causal L={length} D={head_dim}: fwd+bwd time cudnn/pallas = "
                         f"{cudnn / ours:.2f}x (>1: pallas faster)")
        ours, xla = get("prefix_lm", "pallas", length, head_dim), \
            get("prefix_lm", "xla", length, head_dim)
        if ours and xla:
            lines.append(f"prefix_lm L={length} D={head_dim}: fwd+bwd speed-up over XLA = "
                         f"{xla / ours:.2f}x")
    return lines

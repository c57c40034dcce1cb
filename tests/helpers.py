"""Small shared builders for the model and trainer tests (no TensorFlow needed)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from flan_mix.models.t5 import T5Config, Transformer

TINY = dict(vocab_size=128, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
            num_encoder_layers=2, num_decoder_layers=2)


def tiny_model(**overrides) -> Transformer:
    return Transformer(T5Config(**{**TINY, **overrides}))


def packed_batch(rng: np.random.Generator, batch: int = 4, enc_len: int = 24, dec_len: int = 12,
                 vocab: int = 128) -> dict[str, np.ndarray]:
    """A packed EncDec batch: two segments per row plus padding, as seqio's converter lays out."""
    out = {k: np.zeros((batch, enc_len if k.startswith("encoder") else dec_len), np.int32)
           for k in ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions",
                     "decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                     "decoder_segment_ids", "decoder_positions")}
    for b in range(batch):
        e1, e2 = rng.integers(3, enc_len // 2, size=2)
        d1, d2 = rng.integers(2, dec_len // 2, size=2)
        enc_start, dec_start = 0, 0
        for seg, (el, dl) in enumerate([(e1, d1), (e2, d2)], start=1):
            es, ds = slice(enc_start, enc_start + el), slice(dec_start, dec_start + dl)
            out["encoder_input_tokens"][b, es] = rng.integers(2, vocab, el)
            out["encoder_segment_ids"][b, es] = seg
            out["encoder_positions"][b, es] = np.arange(el)
            targets = rng.integers(2, vocab, dl)
            targets[-1] = 1  # EOS
            out["decoder_target_tokens"][b, ds] = targets
            out["decoder_input_tokens"][b, ds] = np.concatenate([[0], targets[:-1]])
            out["decoder_loss_weights"][b, ds] = 1
            out["decoder_segment_ids"][b, ds] = seg
            out["decoder_positions"][b, ds] = np.arange(dl)
            enc_start += el
            dec_start += dl
    return out


def distinct_examples(in_lens, tg_lens, start=10):
    """Distinct tokens per example (ids >= start), each part ending in EOS=1 like a seqio task's output."""
    out, tok = [], start
    for a, b in zip(in_lens, tg_lens):
        inputs = np.array(list(range(tok, tok + a - 1)) + [1], np.int32)
        tok += a
        targets = np.array(list(range(tok, tok + b - 1)) + [1], np.int32)
        tok += b
        out.append((inputs, targets))
    return out


@pytest.fixture(autouse=True)
def reuse_compilations(tmp_path_factory):
    """The rounds/cells build a fresh trainer and decoder each time, with the same shapes: JAX's persistent
    compilation cache lets them share one compilation instead of paying for it each time (test time only)."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    for n, v in saved.items():
        jax.config.update(n, v)

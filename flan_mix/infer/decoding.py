"""The batched decode loop: token rows in, decoded strings out, through Model.predict.

Batches are padded to a fixed size so one compiled program serves them all; the model decides
how it decodes (flan_mix.models: KV-cached greedy or sampled).
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from flan_mix.models.base import DecodingConfig, Model
from flan_mix.runtime import partitioning


def pad_rows(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    """int32 [len(rows), length]: each row cut to `length`, zero-padded."""
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        row = np.asarray(row)[:length]
        out[i, :len(row)] = row
    return out


def strip_after_eos(ids, eos_id: int) -> list[list[int]]:
    """Host-side: token lists cut at the first EOS (exclusive), padding (0) removed."""
    out = []
    for row in ids.tolist():
        row = row[:row.index(eos_id)] if eos_id in row else row
        out.append([t for t in row if t != 0])
    return out


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """The text up to the earliest stop string (exclusive), or all of it."""
    cuts = [i for i in (text.find(s) for s in stop_strings if s) if i >= 0]
    return text[:min(cuts)] if cuts else text


def generate(model: Model, params, token_rows: Sequence[np.ndarray], vocabulary, *, mesh: Mesh,
             inputs_length: int, max_decode_len: int, batch_size: int, desc: str = "decode",
             temperature: float = 0.0, seed: int = 0, stop_strings: Sequence[str] = (), top_k: int = 0,
             top_p: float = 1.0, num_beams: int = 1, length_penalty: float = 0.0) -> list[str]:
    """Decodes every row of input ids to text, ending at EOS or at the first of stop_strings.

    A stop string ends the text on the host, after decoding: the device loop stops at EOS only.
    """
    decoding = DecodingConfig(max_decode_len=max_decode_len, temperature=temperature, top_k=top_k, top_p=top_p,
                              valid_vocab_size=vocabulary.vocab_size, num_beams=num_beams,
                              length_penalty=length_penalty)
    predictions: list[str] = []
    rng = jax.random.PRNGKey(seed)
    for start in tqdm(range(0, len(token_rows), batch_size), desc=desc, unit="batch", leave=False):
        chunk = list(token_rows[start:start + batch_size])
        tokens = pad_rows(chunk + [np.zeros(1, np.int32)] * (batch_size - len(chunk)), inputs_length)
        with mesh:
            tokens = jax.device_put(tokens, partitioning.replicated(mesh))
            ids = model.predict(params, {"inputs": tokens}, decoding,
                                rng=jax.random.fold_in(rng, start))
        for row in strip_after_eos(np.asarray(jax.device_get(ids))[:len(chunk)], vocabulary.eos_id):
            predictions.append(cut_at_stop(vocabulary.decode(row), stop_strings))
    return predictions

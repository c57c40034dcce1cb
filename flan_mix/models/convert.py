"""Hugging Face checkpoint import/export for our T5 1.1 (Flan-T5, mT5) in flan_mix.models.t5,
and the entry points for every family: load_hf_checkpoint dispatches on config.json's model_type,
save_hf_checkpoint and gin_bindings on the config's type ("llama" / LlamaConfig: hf_llama.py).

Pure numpy + safetensors: no torch and no TensorFlow, so it runs on the GPU machines and in a
notebook. Two layers:
  * tensors:     params_from_hf_state_dict / hf_state_dict_from_params map between HF's
                 T5ForConditionalGeneration state dict and our Transformer's param tree;
  * directories: load_hf_checkpoint / save_hf_checkpoint read and write what
                 T5ForConditionalGeneration.from_pretrained / save_pretrained use
                 (config.json + model.safetensors, or shards + model.safetensors.index.json;
                 the file handling is checkpoint_io.py's, shared with hf_llama.py).

Layouts. torch Linear weights are [out, in]; our kernels are [in..., out...]:
  q/k/v   [heads*head_dim, emb] (head-major rows)  <->  [emb, heads, head_dim]
  o       [emb, heads*head_dim]                    <->  [heads, head_dim, emb]
  wi_0/1  [mlp, emb] <-> [emb, mlp];  wo [emb, mlp] <-> [mlp, emb]
  lm_head [vocab, emb] <-> decoder.logits_dense.kernel [emb, vocab]
  relative_attention_bias [buckets, heads] <-> rel_embedding [heads, buckets]
  shared (= encoder/decoder embed_tokens) and layer norms: unchanged.
All conversions are transposes/reshapes, so float32 values round-trip bit for bit.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import numpy as np

from flan_mix.models import hf_llama
from flan_mix.models.checkpoint_io import (CONFIG_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME,  # noqa: F401
                                           CheckpointError, open_weights, read_config_json, write_checkpoint)
from flan_mix.models.llama import LlamaConfig
from flan_mix.models.t5 import T5Config

# feed_forward_proj values that HF computes as gelu_tanh(x W0) * (x W1): "gated-gelu" maps to
# HF's gelu_new; the other two name the same tanh approximation explicitly.
_GATED_GELU = ("gated-gelu", "gated-gelu_new", "gated-gelu_pytorch_tanh")
_RMSNORM_EPS = 1e-6  # layers.RMSNorm's epsilon
# Copies of shared.weight that T5 state dicts may carry (torch state_dict() always does).
_EMBED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# A stray bias some old T5 checkpoints carry; HF ignores it on load (cross-attention has no bias).
_IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


# ----------------------------------------------------------------------------------------------
# The name map: one entry per HF tensor.

def _entries(num_encoder_layers: int, num_decoder_layers: int):
    """Yields (hf_name, our_path, kind, description)."""
    yield "shared.weight", ("token_embed", "embedding"), "same", "token embedding"
    for stack, n in (("encoder", num_encoder_layers), ("decoder", num_decoder_layers)):
        hf = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        yield hf, (stack, "relpos_bias", "rel_embedding"), "relpos", f"{stack} relative position bias"
        for i in range(n):
            blk, ours = f"{stack}.block.{i}.layer", (stack, f"layer_{i}")
            attn = [(0, "SelfAttention", "attention" if stack == "encoder" else "self_attention",
                     "pre_attention_norm" if stack == "encoder" else "pre_self_attention_norm")]
            if stack == "decoder":
                attn.append((1, "EncDecAttention", "encoder_decoder_attention", "pre_cross_attention_norm"))
            for j, hf_mod, our_mod, our_norm in attn:
                what = f"{stack} layer {i} {our_mod}"
                for p, our_p in (("q", "query"), ("k", "key"), ("v", "value")):
                    yield f"{blk}.{j}.{hf_mod}.{p}.weight", ours + (our_mod, our_p, "kernel"), "qkv", f"{what} {our_p}"
                yield f"{blk}.{j}.{hf_mod}.o.weight", ours + (our_mod, "out", "kernel"), "out", f"{what} out"
                yield (f"{blk}.{j}.layer_norm.weight", ours + (our_norm, "scale"), "same",
                       f"{stack} layer {i} {our_norm}")
            j = len(attn)
            for p in ("wi_0", "wi_1", "wo"):
                yield (f"{blk}.{j}.DenseReluDense.{p}.weight", ours + ("mlp", p, "kernel"), "dense",
                       f"{stack} layer {i} mlp {p}")
            yield (f"{blk}.{j}.layer_norm.weight", ours + ("pre_mlp_norm", "scale"), "same",
                   f"{stack} layer {i} pre_mlp_norm")
        yield f"{stack}.final_layer_norm.weight", (stack, "final_norm", "scale"), "same", f"{stack} final_norm"
    yield "lm_head.weight", ("decoder", "logits_dense", "kernel"), "dense", "output layer (untied lm_head)"


def _hf_shape(hf_name: str, kind: str, d: Mapping[str, int]) -> tuple[int, ...]:
    emb, inner = d["emb"], d["heads"] * d["head_dim"]
    if kind == "qkv":
        return (inner, emb)
    if kind == "out":
        return (emb, inner)
    if kind == "relpos":
        return (d["buckets"], d["heads"])
    if hf_name == "shared.weight" or hf_name == "lm_head.weight":
        return (d["vocab"], emb)
    if hf_name.endswith((".wi_0.weight", ".wi_1.weight")):
        return (d["mlp"], emb)
    if hf_name.endswith(".wo.weight"):
        return (emb, d["mlp"])
    return (emb,)  # layer norms


def _to_ours(w: np.ndarray, kind: str, d: Mapping[str, int]) -> np.ndarray:
    if kind == "qkv":
        w = w.T.reshape(d["emb"], d["heads"], d["head_dim"])
    elif kind == "out":
        w = w.T.reshape(d["heads"], d["head_dim"], d["emb"])
    elif kind in ("dense", "relpos"):
        w = w.T
    return np.ascontiguousarray(w, dtype=np.float32)


def _to_hf(w: np.ndarray, kind: str) -> np.ndarray:
    if kind == "qkv":
        w = w.reshape(w.shape[0], -1).T
    elif kind == "out":
        w = w.reshape(-1, w.shape[-1]).T
    elif kind in ("dense", "relpos"):
        w = w.T
    return np.ascontiguousarray(w, dtype=np.float32)


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...], what: str):
    node = tree
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(f"params have no {'/'.join(path[:depth + 1])} (needed for the {what}); "
                           "pass the param tree of flan_mix.models.t5.Transformer "
                           "(variables['params'], not the variables).")
        node = node[key]
    return node


# ----------------------------------------------------------------------------------------------
# State dicts.

def params_from_hf_state_dict(state_dict: Mapping[str, Any], num_encoder_layers: int, num_decoder_layers: int,
                              num_heads: int, head_dim: int, *, emb_dim: int | None = None,
                              mlp_dim: int | None = None, vocab_size: int | None = None,
                              num_buckets: int | None = None,
                              source: str | Callable[[str], str] = "the state dict") -> dict:
    """HF T5ForConditionalGeneration state dict (numpy arrays) -> our Transformer's params (float32).

    emb/mlp/vocab/bucket sizes not given are read off shared.weight, the first wi_0 and the
    encoder's relative_attention_bias; every other tensor must then agree with them. `source`
    names where the tensors came from in error messages (a string, or tensor name -> file).
    Raises CheckpointError for missing, unexpected or misshaped tensors.
    """
    where = source if callable(source) else (lambda _name: str(source))
    whole = where("")
    state = state_dict
    keys = set(state.keys())
    entries = list(_entries(num_encoder_layers, num_decoder_layers))
    expected = {e[0] for e in entries}

    unexpected = sorted(keys - expected - set(_EMBED_ALIASES) - set(_IGNORED))
    if unexpected:
        raise CheckpointError(f"{whole}: {len(unexpected)} tensor(s) that T5 1.1 with "
                              f"{num_encoder_layers}+{num_decoder_layers} layers does not have: "
                              f"{_preview(unexpected)}.{_hint_unexpected(unexpected)}")
    renamed = {}  # our name -> the name to read
    if "shared.weight" not in keys and "encoder.embed_tokens.weight" in keys:
        renamed["shared.weight"] = "encoder.embed_tokens.weight"  # some exports keep only the stack copies
        keys.add("shared.weight")
    missing = [e for e in entries if e[0] not in keys]
    if missing:
        listed = "; ".join(f"{n!r} ({desc})" for n, _, _, desc in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        hint = ""
        if any(n == "lm_head.weight" for n, *_ in missing):
            hint = (" A checkpoint without lm_head.weight ties the output layer to the embedding "
                    "(original T5); flan_mix implements T5 1.1, whose output layer is untied.")
        raise CheckpointError(f"{whole}: missing tensor(s) {listed}{more}.{hint}")

    def fetch(name: str) -> np.ndarray:
        w = np.asarray(state[renamed.get(name, name)])
        if not np.issubdtype(w.dtype, np.floating):
            raise CheckpointError(f"{where(name)}: tensor {name!r} has dtype {w.dtype}; expected floating point.")
        return w

    dims = dict(heads=num_heads, head_dim=head_dim, emb=emb_dim, vocab=vocab_size, mlp=mlp_dim,
                buckets=num_buckets)
    inferred_from = {}
    for dim, name, axis in (("vocab", "shared.weight", 0), ("emb", "shared.weight", 1),
                            ("mlp", "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 0),
                            ("buckets", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 0)):
        if dims[dim] is None:
            shape = np.shape(state[renamed.get(name, name)])
            if len(shape) != 2:
                raise CheckpointError(f"{where(name)}: tensor {name!r} has shape {shape}; expected 2 dims.")
            dims[dim] = int(shape[axis])
            inferred_from[dim] = name

    params: dict = {}
    for name, path, kind, desc in entries:
        w = fetch(name)
        want = _hf_shape(name, kind, dims)
        if tuple(w.shape) != want:
            raise CheckpointError(
                f"{where(name)}: tensor {name!r} ({desc}) has shape {tuple(w.shape)}, expected {want} "
                f"for {_describe(dims, inferred_from)}.")
        _set(params, path, _to_ours(w, kind, dims))
    for alias in _EMBED_ALIASES:
        if alias in keys and alias != renamed.get("shared.weight") and not np.array_equal(
                np.asarray(state[alias]), params["token_embed"]["embedding"]):
            raise CheckpointError(
                f"{where(alias)}: {alias!r} differs from 'shared.weight'; flan_mix's T5 shares one input "
                "embedding between encoder and decoder, as HF's T5 does.")
    return params


def hf_state_dict_from_params(params: Mapping, num_heads: int, head_dim: int) -> dict[str, np.ndarray]:
    """Our Transformer params -> HF T5ForConditionalGeneration state dict (float32 numpy).

    The keys are exactly those of T5ForConditionalGeneration.state_dict(), including the
    encoder/decoder embed_tokens copies of shared.weight (save_hf_checkpoint leaves them out,
    as save_pretrained does), so torch's load_state_dict(strict=True) accepts it.
    """
    params = nn.meta.unbox(params)  # boxed (logically partitioned) params are fine too
    n_enc, n_dec = (_count_layers(_get(params, (stack,), f"{stack} stack")) for stack in ("encoder", "decoder"))
    out = {}
    for name, path, kind, desc in _entries(n_enc, n_dec):
        w = np.asarray(_get(params, path, desc))
        if kind in ("qkv", "out"):
            hd = w.shape[1:] if kind == "qkv" else w.shape[:2]
            if tuple(hd) != (num_heads, head_dim):
                raise ValueError(f"{'/'.join(path)} has shape {w.shape}: heads x head_dim {tuple(hd)} "
                                 f"!= the ({num_heads}, {head_dim}) passed in.")
        out[name] = _to_hf(w, kind)
    shared = out["shared.weight"]
    for alias in _EMBED_ALIASES:
        out[alias] = shared
    return out


def _count_layers(stack: Mapping) -> int:
    n = 0
    while f"layer_{n}" in stack:
        n += 1
    return n


def _preview(names: list[str], k: int = 8) -> str:
    return ", ".join(map(repr, names[:k])) + (f" and {len(names) - k} more" if len(names) > k else "")


def _hint_unexpected(names: list[str]) -> str:
    if any(".DenseReluDense.wi.weight" in n for n in names):
        return (" These are an ungated ReLU feed-forward (original T5, feed_forward_proj='relu'); flan_mix "
                "implements T5 1.1 (gated-gelu): use a T5 1.1 / Flan-T5 / mT5 checkpoint.")
    if any("relative_attention_bias" in n for n in names):
        return (" Relative-position biases in later blocks mean one table per layer (umT5); flan_mix's T5 "
                "shares one table per stack.")
    if any(".block." in n for n in names):
        return " Extra blocks: num_encoder_layers / num_decoder_layers do not match the checkpoint."
    return ""


def _describe(dims: Mapping[str, int], inferred_from: Mapping[str, str]) -> str:
    parts = []
    for dim, label in (("emb", "d_model"), ("heads", "num_heads"), ("head_dim", "d_kv"), ("mlp", "d_ff"),
                       ("vocab", "vocab_size"), ("buckets", "relative_attention_num_buckets")):
        src = f" (from {inferred_from[dim]!r})" if dim in inferred_from else ""
        parts.append(f"{label}={dims[dim]}{src}")
    return "T5 with " + ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# Configs.

def t5_config_from_hf(config_json: Mapping[str, Any], *, source: str = "config.json", **overrides) -> T5Config:
    """HF config.json (as a dict) of a T5 1.1 model -> our T5Config; overrides go to T5Config.

    Refuses configs our model would compute differently: original T5 (ReLU feed-forward, output
    layer tied to the embedding and scaled by d_model**-0.5), other activations, umT5, other
    layer-norm epsilons.
    """
    cfg, where = dict(config_json), source
    model_type = cfg.get("model_type", "t5")
    if model_type not in ("t5", "mt5"):
        raise CheckpointError(f"{where}: model_type={model_type!r}; flan_mix converts T5 1.1 style checkpoints "
                              "(model_type 't5' or 'mt5': T5 1.1, Flan-T5, mT5) and Llama ('llama'). umT5 keeps one relative "
                              "position table per layer and is not supported.")
    ffn = cfg.get("feed_forward_proj", "relu")
    if ffn not in _GATED_GELU:
        raise CheckpointError(
            f"{where}: feed_forward_proj={ffn!r}, but flan_mix's T5 1.1 uses a gated-GELU feed-forward "
            "(feed_forward_proj='gated-gelu'). 'relu' is the original T5 (t5-small/base/...): use a T5 1.1 "
            "checkpoint instead (google/t5-v1_1-*, google/flan-t5-*, google/mt5-*).")
    # transformers < 5 writes tie_word_embeddings=false for T5 1.1. transformers >= 5 always writes
    # tie_word_embeddings=true and records T5 1.1's unscaled, untied head as scale_decoder_outputs=false
    # (it then unties lm_head because the checkpoint holds a separate lm_head.weight).
    untied = cfg.get("tie_word_embeddings", True) is False or cfg.get("scale_decoder_outputs") is False
    if not untied:
        raise CheckpointError(
            f"{where}: tie_word_embeddings is {cfg.get('tie_word_embeddings', '(absent: HF default true)')!r}, "
            "i.e. the output layer reuses the input embedding scaled by d_model**-0.5 (original T5). flan_mix's "
            "T5 1.1 has an untied, unscaled output layer: use a T5 1.1 / Flan-T5 / mT5 checkpoint, whose "
            "config.json says \"tie_word_embeddings\": false.")
    eps = float(cfg.get("layer_norm_epsilon", _RMSNORM_EPS))
    if not math.isclose(eps, _RMSNORM_EPS, rel_tol=1e-9):
        raise CheckpointError(f"{where}: layer_norm_epsilon={eps}; flan_mix's RMSNorm uses {_RMSNORM_EPS}.")
    try:
        num_layers = int(cfg["num_layers"])
        kwargs = dict(
            vocab_size=int(cfg["vocab_size"]), emb_dim=int(cfg["d_model"]), num_heads=int(cfg["num_heads"]),
            head_dim=int(cfg["d_kv"]), mlp_dim=int(cfg["d_ff"]), num_encoder_layers=num_layers,
            num_decoder_layers=int(cfg.get("num_decoder_layers") or num_layers),
            dropout_rate=float(cfg.get("dropout_rate", 0.1)),
            relative_attention_num_buckets=int(cfg.get("relative_attention_num_buckets", 32)),
            relative_attention_max_distance=int(cfg.get("relative_attention_max_distance", 128)))
    except KeyError as e:
        raise CheckpointError(f"{where}: no {e.args[0]!r}; a T5 config.json names vocab_size, d_model, d_kv, "
                              "d_ff, num_heads and num_layers.") from None
    return T5Config(**{**kwargs, **overrides})


def hf_config_from_t5_config(config: T5Config) -> dict[str, Any]:
    """Our T5Config -> an HF config.json dict for T5ForConditionalGeneration (T5 1.1 style)."""
    if config.vocab_size is None:
        raise ValueError("T5Config.vocab_size is None; set it before exporting.")
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.emb_dim,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": _RMSNORM_EPS,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "torch_dtype": "float32",
    }


# ----------------------------------------------------------------------------------------------
# Directories.

def load_hf_checkpoint(directory: str | os.PathLike, **config_overrides) -> tuple[Any, dict]:
    """Reads an HF checkpoint directory -> (config, params as float32 numpy).

    config.json's model_type picks the family: "llama" -> (LlamaConfig, params), read by
    flan_mix.models.hf_llama; T5 1.1 ("t5", "mt5") -> (T5Config, params).
    Needs config.json and model.safetensors, or shards listed in model.safetensors.index.json.
    bfloat16/float16 checkpoints are widened to float32.
    """
    config_json, config_path = read_config_json(directory)
    if config_json.get("model_type") in hf_llama.MODEL_TYPES:
        return hf_llama.load_hf_checkpoint(directory, **config_overrides)
    config = t5_config_from_hf(config_json, source=config_path, **config_overrides)
    lazy, source_desc = open_weights(directory, "T5ForConditionalGeneration")
    params = params_from_hf_state_dict(
        lazy, config.num_encoder_layers, config.num_decoder_layers, config.num_heads, config.head_dim,
        emb_dim=config.emb_dim, mlp_dim=config.mlp_dim, vocab_size=config.vocab_size,
        num_buckets=config.relative_attention_num_buckets,
        source=lambda name: (lazy.file_of(name) or source_desc) + f" (config {config_path})")
    return config, params


def save_hf_checkpoint(params: Mapping, config: Any, directory: str | os.PathLike, *,
                       max_shard_bytes: int | None = None) -> list[str]:
    """Writes config.json + model.safetensors (or shards + index when the tensors exceed
    max_shard_bytes) that T5ForConditionalGeneration.from_pretrained(directory) loads, or
    LlamaForCausalLM's for a LlamaConfig (flan_mix.models.hf_llama).

    Returns the paths written. Tensors are float32, in HF's [out, in] layout.
    """
    if isinstance(config, LlamaConfig):
        return hf_llama.save_hf_checkpoint(params, config, directory, max_shard_bytes=max_shard_bytes)
    hf_config = hf_config_from_t5_config(config)
    state = hf_state_dict_from_params(params, config.num_heads, config.head_dim)
    for alias in _EMBED_ALIASES:  # tied to shared.weight in HF; save_pretrained leaves them out too
        del state[alias]
    # Check the tensors against the config we are about to write.
    dims = dict(emb=config.emb_dim, heads=config.num_heads, head_dim=config.head_dim, mlp=config.mlp_dim,
                vocab=config.vocab_size, buckets=config.relative_attention_num_buckets)
    n_enc = _count_layers(_get(params, ("encoder",), "encoder stack"))
    n_dec = _count_layers(_get(params, ("decoder",), "decoder stack"))
    if (n_enc, n_dec) != (config.num_encoder_layers, config.num_decoder_layers):
        raise ValueError(f"params have {n_enc} encoder / {n_dec} decoder layers, the config says "
                         f"{config.num_encoder_layers} / {config.num_decoder_layers}.")
    for name, _, kind, desc in _entries(n_enc, n_dec):
        want = _hf_shape(name, kind, dims)
        if state[name].shape != want:
            raise ValueError(f"{desc}: HF tensor {name!r} would have shape {state[name].shape}, but the config "
                             f"implies {want} ({_describe(dims, {})}).")

    return write_checkpoint(directory, hf_config, state, max_shard_bytes)


# T5Config fields that describe the checkpoint; dtype and attention settings belong to the hardware.
_ARCHITECTURE_FIELDS = ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                        "num_decoder_layers", "dropout_rate", "relative_attention_num_buckets",
                        "relative_attention_max_distance")


def gin_bindings(config: Any, source: str = "") -> str:
    """gin text that rebuilds `config`'s architecture (written beside an imported checkpoint)."""
    if isinstance(config, LlamaConfig):
        return hf_llama.gin_bindings(config, source)
    lines = [f"# T5Config of the checkpoint imported from {source}" if source else "# T5Config",
             "build_model.config = @T5Config()"]
    lines += [f"T5Config.{name} = {getattr(config, name)!r}" for name in _ARCHITECTURE_FIELDS]
    return "\n".join(lines) + "\n"

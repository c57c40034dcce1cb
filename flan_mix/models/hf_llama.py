"""HF transformers Llama checkpoints (LlamaForCausalLM) in and out of our decoder (flan_mix.models.llama).

flan_mix.models.convert's load_hf_checkpoint / save_hf_checkpoint / gin_bindings dispatch here for
model_type "llama" / a LlamaConfig; the functions below work on their own too. Pure numpy +
safetensors (directory handling: checkpoint_io), no torch and no TensorFlow.

Layouts. torch Linear weights are [out, in]; our kernels are [in..., out...]:
  q_proj [heads*head_dim, emb], k_proj/v_proj [kv_heads*head_dim, emb] <-> [emb, (kv_)heads, head_dim]
  o_proj [emb, heads*head_dim]                                         <-> [heads, head_dim, emb]
  gate_proj / up_proj [mlp, emb] <-> mlp/wi_0 / wi_1 [emb, mlp];  down_proj [emb, mlp] <-> mlp/wo [mlp, emb]
  lm_head [vocab, emb] <-> logits_dense/kernel [emb, vocab] (absent when the embeddings are tied)
  embed_tokens and the RMSNorm weights: unchanged.
HF stores q/k rows in the rotate_half order our RoPE uses (its own conversion script permuted Meta's
interleaved weights once), so nothing is permuted here and float32 values round-trip bit for bit.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import numpy as np

from flan_mix.models.checkpoint_io import CheckpointError, open_weights, read_config_json, write_checkpoint
from flan_mix.models.llama import Llama3RopeScaling, LlamaConfig

MODEL_TYPES = ("llama",)
_IGNORED_SUFFIX = ".rotary_emb.inv_freq"  # a buffer old checkpoints saved; recomputed from rope_theta
_MAX_POSITIONS = 4096  # config.json needs max_position_embeddings; our RoPE does not depend on it


def _entries(cfg: LlamaConfig):
    """Yields (hf_name, our_path, kind, description, hf_shape), one per tensor of the checkpoint."""
    E, H, K, D, M, V = cfg.emb_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
    yield "model.embed_tokens.weight", ("token_embed", "embedding"), "same", "token embedding", (V, E)
    for i in range(cfg.num_layers):
        hf, ours = f"model.layers.{i}", f"layer_{i}"
        yield (f"{hf}.input_layernorm.weight", (ours, "pre_attention_norm", "scale"), "same",
               f"layer {i} pre_attention_norm", (E,))
        for proj, our, heads in (("q_proj", "query", H), ("k_proj", "key", K), ("v_proj", "value", K)):
            yield (f"{hf}.self_attn.{proj}.weight", (ours, "attention", our, "kernel"), "proj",
                   f"layer {i} attention {our}", (heads * D, E))
        yield (f"{hf}.self_attn.o_proj.weight", (ours, "attention", "out", "kernel"), "out",
               f"layer {i} attention out", (E, H * D))
        yield (f"{hf}.post_attention_layernorm.weight", (ours, "pre_mlp_norm", "scale"), "same",
               f"layer {i} pre_mlp_norm", (E,))
        for proj, our, shape in (("gate_proj", "wi_0", (M, E)), ("up_proj", "wi_1", (M, E)),
                                 ("down_proj", "wo", (E, M))):
            yield f"{hf}.mlp.{proj}.weight", (ours, "mlp", our, "kernel"), "dense", f"layer {i} mlp {our}", shape
    yield "model.norm.weight", ("final_norm", "scale"), "same", "final_norm", (E,)
    if not cfg.tie_embeddings:
        yield "lm_head.weight", ("logits_dense", "kernel"), "dense", "output layer (untied lm_head)", (V, E)


def _to_ours(w: np.ndarray, kind: str, cfg: LlamaConfig) -> np.ndarray:
    if kind == "proj":
        w = w.T.reshape(cfg.emb_dim, -1, cfg.head_dim)
    elif kind == "out":
        w = w.T.reshape(cfg.num_heads, cfg.head_dim, cfg.emb_dim)
    elif kind == "dense":
        w = w.T
    return np.ascontiguousarray(w, dtype=np.float32)


def _to_hf(w: np.ndarray, kind: str) -> np.ndarray:
    if kind == "proj":
        w = w.reshape(w.shape[0], -1).T
    elif kind == "out":
        w = w.reshape(-1, w.shape[-1]).T
    elif kind == "dense":
        w = w.T
    return np.ascontiguousarray(w, dtype=np.float32)


def _describe(cfg: LlamaConfig) -> str:
    return (f"Llama with hidden_size={cfg.emb_dim}, num_hidden_layers={cfg.num_layers}, num_attention_heads="
            f"{cfg.num_heads}, num_key_value_heads={cfg.num_kv_heads}, head_dim={cfg.head_dim}, intermediate_size="
            f"{cfg.mlp_dim}, vocab_size={cfg.vocab_size}, tie_word_embeddings={cfg.tie_embeddings}")


# ----------------------------------------------------------------------------------------------
# State dicts.

def params_from_hf_state_dict(state: Mapping[str, Any], config: LlamaConfig, *,
                              source: str | Callable[[str], str] = "the state dict") -> dict:
    """HF LlamaForCausalLM state dict (numpy arrays) -> our Decoder's params (float32).

    Every tensor must have the shape `config` implies. `source` names where the tensors came from
    in error messages (a string, or tensor name -> file). Raises CheckpointError for missing,
    unexpected or misshaped tensors, naming the tensor and both shapes.
    """
    where = source if callable(source) else (lambda _name: str(source))
    entries = list(_entries(config))
    expected = {e[0] for e in entries}
    keys = {k for k in state.keys() if not k.endswith(_IGNORED_SUFFIX)}
    # torch's state_dict() of a tied model also holds lm_head.weight (the embedding itself).
    tied_copy = config.tie_embeddings and "lm_head.weight" in keys
    unexpected = sorted(keys - expected - ({"lm_head.weight"} if tied_copy else set()))
    if unexpected:
        shown = ", ".join(map(repr, unexpected[:8])) + (f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else "")
        hint = ""
        if any(n.endswith(".bias") for n in unexpected):
            hint = " Biases mean another architecture (attention_bias / mlp_bias, e.g. Qwen2); LLaMA has none."
        elif any(n.startswith("model.layers.") for n in unexpected):
            hint = " Extra or differently named layers: num_hidden_layers or the architecture does not match."
        raise CheckpointError(f"{where('')}: {len(unexpected)} tensor(s) that {_describe(config)} does not have: "
                              f"{shown}.{hint}")
    missing = [e for e in entries if e[0] not in keys]
    if missing:
        listed = "; ".join(f"{n!r} ({desc})" for n, _, _, desc, _ in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        hint = (" The config says tie_word_embeddings=false, so the output layer needs its own lm_head.weight."
                if any(n == "lm_head.weight" for n, *_ in missing) else "")
        raise CheckpointError(f"{where('')}: missing tensor(s) {listed}{more}.{hint}")

    params: dict = {}
    for name, path, kind, desc, want in entries:
        w = np.asarray(state[name])
        if not np.issubdtype(w.dtype, np.floating):
            raise CheckpointError(f"{where(name)}: tensor {name!r} has dtype {w.dtype}; expected floating point.")
        if tuple(w.shape) != want:
            raise CheckpointError(f"{where(name)}: tensor {name!r} ({desc}) has shape {tuple(w.shape)}, expected "
                                  f"{want} for {_describe(config)}.")
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = _to_ours(w, kind, config)
    if tied_copy and not np.array_equal(np.asarray(state["lm_head.weight"], np.float32),
                                        params["token_embed"]["embedding"]):
        raise CheckpointError(f"{where('lm_head.weight')}: 'lm_head.weight' differs from 'model.embed_tokens.weight' "
                              "but the config says tie_word_embeddings=true; fix config.json.")
    return params


def hf_state_dict_from_params(params: Mapping, config: LlamaConfig) -> dict[str, np.ndarray]:
    """Our Decoder params -> HF LlamaForCausalLM state dict (float32 numpy), the keys of its
    state_dict(): with tied embeddings lm_head.weight is the embedding (save_hf_checkpoint leaves it
    out, as save_pretrained does), so torch's load_state_dict(strict=True) accepts it."""
    params = nn.meta.unbox(params)  # boxed (logically partitioned) params are fine too
    out = {}
    for name, path, kind, desc, want in _entries(config):
        node = params
        for depth, key in enumerate(path):
            if not isinstance(node, Mapping) or key not in node:
                raise KeyError(f"params have no {'/'.join(path[:depth + 1])} (needed for the {desc}); pass the "
                               "param tree of flan_mix.models.llama.Decoder built from this config.")
            node = node[key]
        w = _to_hf(np.asarray(node), kind)
        if w.shape != want:
            raise ValueError(f"{'/'.join(path)} has shape {np.shape(node)}: as HF tensor {name!r} that is {w.shape}, "
                             f"but the config implies {want} ({_describe(config)}).")
        out[name] = w
    if config.tie_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


# ----------------------------------------------------------------------------------------------
# Configs.

def llama_config_from_hf(config_json: Mapping[str, Any], *, source: str = "config.json", **overrides) -> LlamaConfig:
    """HF config.json (as a dict) of a Llama model -> our LlamaConfig; overrides go to LlamaConfig.

    Refuses what our model would compute differently: other activations, biases, RoPE variants
    other than the default and Llama 3's.
    """
    cfg, where = dict(config_json), source
    if cfg.get("model_type") not in MODEL_TYPES:
        raise CheckpointError(f"{where}: model_type={cfg.get('model_type')!r}; this reader converts Llama "
                              "checkpoints (model_type 'llama').")
    refusals = []
    if cfg.get("hidden_act", "silu") != "silu":
        refusals.append(f"hidden_act={cfg['hidden_act']!r} (ours: SwiGLU, 'silu')")
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            refusals.append(f"{flag}=true (ours has no biases)")
    # transformers >= 5 writes rope_parameters; older versions rope_theta + rope_scaling.
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        refusals.append(f"rope type {rope_type!r} (ours: 'default' and 'llama3')")
    if refusals:
        raise CheckpointError(f"{where}: flan_mix's Llama cannot compute " + "; ".join(refusals) + ".")
    scaling = None
    if rope_type == "llama3":
        scaling = Llama3RopeScaling(
            factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
            original_max_position_embeddings=int(rope.get("original_max_position_embeddings",
                                                          cfg.get("max_position_embeddings", 8192))))
    eos = cfg.get("eos_token_id", 2)
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos  # Llama 3 instruct lists several; decode stops at one
    try:
        heads = int(cfg["num_attention_heads"])
        kwargs = dict(
            vocab_size=int(cfg["vocab_size"]), emb_dim=int(cfg["hidden_size"]), num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads, num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            mlp_dim=int(cfg["intermediate_size"]),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))), rope_scaling=scaling,
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),  # HF LlamaConfig's default
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            bos_id=int(cfg.get("bos_token_id") if cfg.get("bos_token_id") is not None else 1),
            eos_id=int(eos if eos is not None else 2))
    except KeyError as e:
        raise CheckpointError(f"{where}: no {e.args[0]!r}; a Llama config.json names vocab_size, hidden_size, "
                              "num_hidden_layers, num_attention_heads and intermediate_size.") from None
    try:
        return LlamaConfig(**{**kwargs, **overrides})
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e


def hf_config_from_llama_config(config: LlamaConfig) -> dict[str, Any]:
    """Our LlamaConfig -> an HF config.json dict for LlamaForCausalLM (rope in the pre-5.0 keys,
    rope_theta + rope_scaling, which every transformers version reads)."""
    if config.vocab_size is None:
        raise ValueError("LlamaConfig.vocab_size is None; set it before exporting.")
    scaling = None
    if config.rope_scaling is not None:
        s = config.rope_scaling
        scaling = {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                   "high_freq_factor": s.high_freq_factor,
                   "original_max_position_embeddings": s.original_max_position_embeddings}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.emb_dim,
        "intermediate_size": config.mlp_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": scaling,
        "max_position_embeddings": max(_MAX_POSITIONS, s.original_max_position_embeddings) if scaling else _MAX_POSITIONS,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": config.bos_id,
        "eos_token_id": config.eos_id,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


# ----------------------------------------------------------------------------------------------
# Directories.

def load_hf_checkpoint(directory: str | os.PathLike, **config_overrides) -> tuple[LlamaConfig, dict]:
    """Reads an HF Llama checkpoint directory -> (LlamaConfig, params as float32 numpy)."""
    config_json, config_path = read_config_json(directory)
    config = llama_config_from_hf(config_json, source=config_path, **config_overrides)
    lazy, source_desc = open_weights(directory, "LlamaForCausalLM")
    params = params_from_hf_state_dict(
        lazy, config, source=lambda name: (lazy.file_of(name) or source_desc) + f" (config {config_path})")
    return config, params


def save_hf_checkpoint(params: Mapping, config: LlamaConfig, directory: str | os.PathLike, *,
                       max_shard_bytes: int | None = None) -> list[str]:
    """Writes config.json + model.safetensors (or shards + index past max_shard_bytes) that
    LlamaForCausalLM.from_pretrained(directory) loads; returns the paths written."""
    state = hf_state_dict_from_params(params, config)
    if config.tie_embeddings:
        del state["lm_head.weight"]  # the embedding itself; save_pretrained leaves it out too
    return write_checkpoint(directory, hf_config_from_llama_config(config), state, max_shard_bytes)


# LlamaConfig fields that describe the checkpoint; the mode (prefix_lm), dtype and attention
# settings belong to the run.
_ARCHITECTURE_FIELDS = ("vocab_size", "emb_dim", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
                        "rope_theta", "norm_eps", "tie_embeddings", "bos_id", "eos_id")


def gin_bindings(config: LlamaConfig, source: str = "") -> str:
    """gin text that rebuilds `config`'s architecture (written beside an imported checkpoint)."""
    lines = [f"# LlamaConfig of the checkpoint imported from {source}" if source else "# LlamaConfig",
             "build_model.config = @LlamaConfig()"]
    lines += [f"LlamaConfig.{name} = {getattr(config, name)!r}" for name in _ARCHITECTURE_FIELDS]
    if config.rope_scaling is not None:
        lines.append("LlamaConfig.rope_scaling = @Llama3RopeScaling()")
        lines += [f"Llama3RopeScaling.{f.name} = {getattr(config.rope_scaling, f.name)!r}"
                  for f in dataclasses.fields(config.rope_scaling)]
    return "\n".join(lines) + "\n"

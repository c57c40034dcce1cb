"""build_model: the gin entry that turns a model config into a Model.

The config's type picks the family: T5Config -> EncoderDecoderModel (T5 1.1),
LlamaConfig -> DecoderOnlyModel (LLaMA-style; gin/models/llama_*.gin). The vocabulary size comes
from the data side as a plain int, so models never import the data code.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import gin

from flan_mix.models.base import Model
from flan_mix.models.decoder_only import DecoderOnlyModel
from flan_mix.models.encoder_decoder import EncoderDecoderModel
from flan_mix.models.llama import LlamaConfig
from flan_mix.models.t5 import T5Config

# config type -> the Model family that runs it
FAMILIES = {T5Config: EncoderDecoderModel, LlamaConfig: DecoderOnlyModel}


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """T5 pads the embedding table to a multiple of 128 so it shards evenly over the model axis
    (decoder-only models too: same rule, same reason)."""
    return -(-vocab_size // multiple) * multiple


@gin.configurable
def build_model(config: Any = gin.REQUIRED, vocab_size: int | None = None,
                attention_impl: str | None = None, attention_block_sizes: Any = None,
                z_loss: float = 1e-4, loss_normalization: Any = "num_real_target_tokens") -> Model:
    """The Model for `config`; a config without vocab_size takes `vocab_size` (padded).

    attention_impl / attention_block_sizes override the config's (gin: ATTENTION_IMPL and
    build_model.attention_block_sizes = @BlockSizes()).
    """
    family = next((f for cls, f in FAMILIES.items() if isinstance(config, cls)), None)
    if family is None:
        raise ValueError(f"build_model.config is a {type(config).__name__}; expected @T5Config() or "
                         "@LlamaConfig() (see gin/models/).")
    name = type(config).__name__
    if config.vocab_size is None:
        if vocab_size is None:
            raise ValueError(f"{name}.vocab_size is unset and no vocabulary size was given; bind "
                             f"{name}.vocab_size in gin or build the model from a task vocabulary.")
        config = dataclasses.replace(config, vocab_size=padded_vocab_size(vocab_size))
    elif vocab_size is not None and config.vocab_size < vocab_size:
        raise ValueError(f"{name}.vocab_size={config.vocab_size} is smaller than the vocabulary "
                         f"({vocab_size} ids); fix the model gin file or the vocabulary.")
    if attention_impl is not None:
        config = dataclasses.replace(config, attention_impl=attention_impl)
    if attention_block_sizes is not None:
        config = dataclasses.replace(config, attention_block_sizes=attention_block_sizes)
    return family(config, z_loss=z_loss, loss_normalization=loss_normalization)

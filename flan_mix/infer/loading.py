"""One restore sequence for everything that runs a trained model: vocabulary, model, mesh, params."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from jax.sharding import Mesh

from flan_mix.models.base import Model
from flan_mix.models.build import build_model
from flan_mix.runtime import checkpoints, partitioning


@dataclasses.dataclass
class LoadedModel:
    model: Model
    params: Any
    mesh: Mesh
    vocabulary: Any


TOKENIZER_SUBDIR = "tokenizer"  # where `run.py convert --from_hf` keeps an imported model's tokenizer


def load_model(model_dir: str, step: int | None = None, vocabulary=None) -> LoadedModel:
    """The model of the gin config with the params of MODEL_DIR's checkpoint (latest unless `step`).

    The vocabulary sizes the model; without one, the data collections are registered to get it,
    tokenized with MODEL_DIR/tokenizer/ when the model was imported with its own tokenizer.
    """
    if vocabulary is None:
        from flan_mix.data import registration
        tokenizer_dir = os.path.join(model_dir, TOKENIZER_SUBDIR)
        # Passed only when present, so a gin binding of register_all.tokenizer_dir still applies otherwise.
        kwargs = {"tokenizer_dir": tokenizer_dir} if os.path.isdir(tokenizer_dir) else {}
        vocabulary = registration.register_all(**kwargs)
    model = build_model(vocab_size=vocabulary.vocab_size)
    mesh = partitioning.make_mesh()
    params = checkpoints.restore_params(model_dir, step, model=model, mesh=mesh,
                                        rules=partitioning.logical_axis_rules())
    return LoadedModel(model=model, params=params, mesh=mesh, vocabulary=vocabulary)

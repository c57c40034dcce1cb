"""One restore sequence for everything that runs a trained model: vocabulary, model, mesh, params."""
from __future__ import annotations

import dataclasses
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


def load_model(model_dir: str, step: int | None = None, vocabulary=None) -> LoadedModel:
    """The model of the gin config with the params of MODEL_DIR's checkpoint (latest unless `step`).

    The vocabulary sizes the model; without one, the data collections are registered to get it.
    """
    if vocabulary is None:
        from flan_mix.data import registration
        vocabulary = registration.register_all()
    model = build_model(vocab_size=vocabulary.vocab_size)
    mesh = partitioning.make_mesh()
    params = checkpoints.restore_params(model_dir, step, model=model, mesh=mesh,
                                        rules=partitioning.logical_axis_rules())
    return LoadedModel(model=model, params=params, mesh=mesh, vocabulary=vocabulary)

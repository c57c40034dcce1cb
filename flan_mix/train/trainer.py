"""The model-agnostic trainer: sharded state and the jitted train step with microbatch accumulation.

It knows a Model only through the interface in flan_mix.models.base (loss, loss_weights,
params), so the encoder-decoder and decoder-only families train through the same code.

Every step reports metrics["nonfinite"], a bit mask (NONFINITE_BITS) of what came out NaN or inf:
the loss, the gradient norm, the optimizer's update. With skip_nonfinite the step then leaves
params and optimizer state as they were (a select on device, no host round trip); the step
counter still advances, so the step keeps naming the batch it consumed and the learning-rate
schedule moves on. Without it the update is applied and the caller (train()) stops the run.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from flan_mix.models.base import Model
from flan_mix.models.losses import LOSS_STATS
from flan_mix.runtime import checkpoints, partitioning
from flan_mix.runtime.checkpoints import TrainState

# metrics["nonfinite"]: which of these were NaN or inf at a step (0: all finite).
NONFINITE_BITS = {"loss": 1, "grad_norm": 2, "update": 4}


def nonfinite_names(mask: int) -> list[str]:
    """The names behind a metrics["nonfinite"] bit mask."""
    return [name for name, bit in NONFINITE_BITS.items() if int(mask) & bit]


def tree_all_finite(tree) -> jax.Array:
    """True when every floating-point leaf of `tree` is free of NaN and inf (a device scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@dataclasses.dataclass
class Trainer:
    """Holds the model, optimizer and mesh; builds the sharded state and the jitted step."""
    model: Model
    optimizer: optax.GradientTransformation
    mesh: Mesh
    rules: Any
    schedule: Callable | None = None
    num_microbatches: int = 1
    dropout_seed: int = 0
    skip_nonfinite: bool = False  # a step whose loss, gradients or update are NaN/inf changes nothing

    # ----- state -----
    def abstract_state(self):
        """(ShapeDtypeStruct state, shardings) without allocating anything."""
        params, param_shardings = checkpoints.abstract_params(self.model, self.mesh, self.rules)
        opt_state = jax.eval_shape(self.optimizer.init, params)
        opt_shardings = partitioning.match_param_shardings(opt_state, params, param_shardings, self.mesh)
        shardings = TrainState(step=partitioning.replicated(self.mesh), params=param_shardings,
                               opt_state=opt_shardings)
        abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state)
        abstract = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        return abstract, shardings

    def init_state(self, seed: int):
        """Fresh parameters, created directly in their shards."""
        _, shardings = self.abstract_state()

        def init(rng):
            params = self.model.init_params(rng)
            return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=self.optimizer.init(params))

        with jax.set_mesh(self.mesh):
            return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))

    # ----- loss and step -----
    def _loss_terms(self, params, batch, dropout_rng, weights):
        return self.model.loss(params, batch, weights=weights, dropout_rng=dropout_rng)

    def _grads(self, params, batch, dropout_rng, weights):
        """Gradient of the un-normalized objective, summed over microbatches."""
        grad_fn = jax.grad(self._loss_terms, has_aux=True)
        m = self.num_microbatches
        if m == 1:
            return grad_fn(params, batch, dropout_rng, weights)
        size = weights.shape[0]
        if size % m:
            raise ValueError(f"batch size {size} is not divisible by num_microbatches={m}.")
        split = lambda x: x.reshape((m, size // m) + x.shape[1:])
        micro = jax.tree_util.tree_map(split, (batch, weights))
        rngs = None if dropout_rng is None else jax.random.split(dropout_rng, m)

        def body(carry, i):
            b, w = jax.tree_util.tree_map(lambda x: x[i], micro)
            g, s = grad_fn(params, b, None if rngs is None else rngs[i], w)
            return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        zero_stats = {k: jnp.float32(0) for k in LOSS_STATS}
        (grads, stats), _ = jax.lax.scan(body, (zeros, zero_stats), jnp.arange(m))
        return grads, stats

    def _train_step(self, state: TrainState, batch, dropout: bool):
        weights, denominator = self.model.loss_weights(batch)
        rng = jax.random.fold_in(jax.random.PRNGKey(self.dropout_seed), state.step) if dropout else None
        grads, stats = self._grads(state.params, batch, rng, weights)
        grads = jax.tree_util.tree_map(lambda g: g / denominator, grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        tokens = jnp.maximum(stats["target_tokens"], 1.0)
        metrics = {"loss": stats["ce_sum"] / tokens, "z_loss": stats["z_loss_sum"] / tokens,
                   "accuracy": stats["correct"] / tokens, "target_tokens": stats["target_tokens"],
                   "grad_norm": optax.global_norm(grads)}
        if self.schedule is not None:
            metrics["learning_rate"] = self.schedule(state.step)
        bits = NONFINITE_BITS
        nonfinite = (jnp.where(jnp.isfinite(metrics["loss"]), 0, bits["loss"])
                     | jnp.where(jnp.isfinite(metrics["grad_norm"]), 0, bits["grad_norm"])
                     | jnp.where(tree_all_finite(updates), 0, bits["update"])).astype(jnp.int32)
        metrics["nonfinite"] = nonfinite
        if self.skip_nonfinite:
            keep_old = nonfinite != 0
            choose = lambda new, old: jnp.where(keep_old, old, new)
            params = jax.tree_util.tree_map(choose, params, state.params)
            opt_state = jax.tree_util.tree_map(choose, opt_state, state.opt_state)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def compile_train_step(self, state_shardings, dropout: bool = True):
        """jit with explicit in/out shardings; the old state is donated (updated in place)."""
        batch_sh = partitioning.batch_sharding(self.mesh)
        return jax.jit(lambda s, b: self._train_step(s, b, dropout),
                       in_shardings=(state_shardings, batch_sh),
                       out_shardings=(state_shardings, partitioning.replicated(self.mesh)),
                       donate_argnums=(0,))

    def run_step(self, step_fn, state, host_batch: dict[str, np.ndarray]):
        host_batch = {k: host_batch[k] for k in self.model.FEATURES if k in host_batch}
        # jax.set_mesh, not `with mesh:`: on jax >= 0.10 only set_mesh sets the abstract mesh that
        # flax's with_logical_constraint looks for, so under `with mesh:` every activation
        # constraint was silently dropped and XLA chose the activation layouts alone.
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return step_fn(state, partitioning.host_batch_to_global(host_batch, self.mesh))

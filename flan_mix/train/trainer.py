"""Train state, loss, and the jitted, sharded train step with microbatch accumulation."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from flan_mix.train import partitioning

LOSS_NORMALIZATIONS = ("num_real_target_tokens", "average_per_sequence", "sum")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def token_losses(logits, targets, z_loss: float):
    """Per-token cross entropy and z-loss (z_loss * logsumexp^2, which keeps logits near 0)."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit, z_loss * jnp.square(log_z)


def loss_weights_and_denominator(batch, normalization):
    """Token weights and the denominator of the loss, both independent of the parameters.

    num_real_target_tokens: mean over the target tokens of the whole (global) batch.
    average_per_sequence:   each packed segment's tokens weigh 1/len, averaged over segments.
    sum:                    plain sum.  A float: sum / that constant (t5x's fixed factor).
    """
    weights = batch["decoder_loss_weights"].astype(jnp.float32)
    if normalization == "num_real_target_tokens":
        return weights, jnp.sum(weights)
    if normalization == "sum":
        return weights, jnp.float32(1.0)
    if isinstance(normalization, (int, float)) and not isinstance(normalization, bool):
        return weights, jnp.float32(normalization)
    if normalization == "average_per_sequence":
        seg = batch.get("decoder_segment_ids")
        if seg is None:
            seg = (batch["decoder_target_tokens"] > 0).astype(jnp.int32)
        same = seg[:, :, None] == seg[:, None, :]
        seg_len = jnp.sum(same * weights[:, None, :], axis=-1)
        weights = weights / jnp.maximum(seg_len, 1.0)
        return weights, jnp.sum(weights)  # each segment's weights sum to 1
    raise ValueError(f"unknown loss normalization {normalization!r}; use one of "
                     f"{LOSS_NORMALIZATIONS} or a float (gin: Trainer.loss_normalization).")


@dataclasses.dataclass
class Trainer:
    """Holds the model, optimizer and mesh; builds the sharded state and the jitted step."""
    model: nn.Module
    optimizer: optax.GradientTransformation
    mesh: Mesh
    rules: Any
    schedule: Callable | None = None
    z_loss: float = 1e-4
    loss_normalization: Any = "num_real_target_tokens"
    num_microbatches: int = 1
    dropout_seed: int = 0

    # ----- state -----
    def _init_variables(self, rng, batch_shapes):
        dummy = {k: jnp.ones(s, jnp.int32) for k, s in batch_shapes.items()}
        return self.model.init(rng, **dummy, deterministic=True)

    def abstract_state(self, batch_shapes):
        """(ShapeDtypeStruct state, shardings) without allocating anything."""
        init = functools.partial(self._init_variables, batch_shapes=batch_shapes)
        boxed = jax.eval_shape(init, jax.random.PRNGKey(0))["params"]
        param_shardings = partitioning.logical_to_shardings(nn.get_partition_spec(boxed), self.mesh,
                                                            self.rules)
        params = nn.meta.unbox(boxed)
        opt_state = jax.eval_shape(self.optimizer.init, params)
        opt_shardings = partitioning.match_param_shardings(opt_state, params, param_shardings, self.mesh)
        abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state)
        shardings = TrainState(step=partitioning.replicated(self.mesh), params=param_shardings,
                               opt_state=opt_shardings)
        abstract = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        return abstract, shardings

    def init_state(self, seed: int, batch_shapes):
        """Fresh parameters, created directly in their shards."""
        _, shardings = self.abstract_state(batch_shapes)

        def init(rng):
            params = nn.meta.unbox(self._init_variables(rng, batch_shapes)["params"])
            return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=self.optimizer.init(params))

        with self.mesh:
            return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))

    # ----- loss and step -----
    def _loss_terms(self, params, batch, dropout_rng, weights):
        deterministic = dropout_rng is None
        rngs = None if deterministic else {"dropout": dropout_rng}
        logits = self.model.apply({"params": params}, **batch, deterministic=deterministic, rngs=rngs)
        ce, zl = token_losses(logits, batch["decoder_target_tokens"], self.z_loss)
        raw = batch["decoder_loss_weights"].astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == batch["decoder_target_tokens"]) * raw
        objective = jnp.sum((ce + zl) * weights)
        stats = {"ce_sum": jnp.sum(ce * raw), "z_loss_sum": jnp.sum(zl * raw),
                 "correct": jnp.sum(correct), "target_tokens": jnp.sum(raw)}
        return objective, stats

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
        zero_stats = {k: jnp.float32(0) for k in ("ce_sum", "z_loss_sum", "correct", "target_tokens")}
        (grads, stats), _ = jax.lax.scan(body, (zeros, zero_stats), jnp.arange(m))
        return grads, stats

    def _train_step(self, state: TrainState, batch, dropout: bool):
        weights, denominator = loss_weights_and_denominator(batch, self.loss_normalization)
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
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def compile_train_step(self, state_shardings, dropout: bool = True):
        """jit with explicit in/out shardings; the old state is donated (updated in place)."""
        batch_sh = partitioning.batch_sharding(self.mesh)
        return jax.jit(lambda s, b: self._train_step(s, b, dropout),
                       in_shardings=(state_shardings, batch_sh),
                       out_shardings=(state_shardings, partitioning.replicated(self.mesh)),
                       donate_argnums=(0,))

    def run_step(self, step_fn, state, host_batch: dict[str, np.ndarray]):
        with self.mesh, nn.logical_axis_rules(self.rules):
            return step_fn(state, partitioning.host_batch_to_global(host_batch, self.mesh))

"""Token losses and their normalisations, shared by every model family.

The loss a trainer differentiates is sum((cross entropy + z-loss) * weights); the trainer divides
the gradient by the denominator afterwards, so microbatches can be summed before normalising.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_NORMALIZATIONS = ("num_real_target_tokens", "average_per_sequence", "sum")
# The statistics every Model.loss returns (sums over the batch): the trainer turns them into metrics.
LOSS_STATS = ("ce_sum", "z_loss_sum", "correct", "target_tokens")


def token_losses(logits, targets, z_loss: float):
    """Per-token cross entropy and z-loss (z_loss * logsumexp^2, which keeps logits near 0)."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit, z_loss * jnp.square(log_z)


def target_log_likelihoods(logits, targets, weights):
    """Per-row sums and means of target-token log-probabilities, with the token counts."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    weights = weights.astype(jnp.float32)
    total = jnp.sum(token_logp * weights, axis=-1)
    count = jnp.sum(weights, axis=-1)
    return {"sum_logprob": total, "mean_logprob": total / jnp.maximum(count, 1.0),
            "num_tokens": count.astype(jnp.int32)}


def loss_weights_and_denominator(loss_weights, segment_ids, normalization):
    """Token weights and the denominator of the loss, both independent of the parameters.

    num_real_target_tokens: mean over the target tokens of the whole (global) batch.
    average_per_sequence:   each packed segment's tokens weigh 1/len, averaged over segments.
    sum:                    plain sum.  A float: sum / that constant (t5x's fixed factor).
    """
    weights = loss_weights.astype(jnp.float32)
    if normalization == "num_real_target_tokens":
        return weights, jnp.sum(weights)
    if normalization == "sum":
        return weights, jnp.float32(1.0)
    if isinstance(normalization, (int, float)) and not isinstance(normalization, bool):
        return weights, jnp.float32(normalization)
    if normalization == "average_per_sequence":
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        seg_len = jnp.sum(same * weights[:, None, :], axis=-1)
        weights = weights / jnp.maximum(seg_len, 1.0)
        return weights, jnp.sum(weights)  # each segment's weights sum to 1
    raise ValueError(f"unknown loss normalization {normalization!r}; use one of "
                     f"{LOSS_NORMALIZATIONS} or a float (gin: build_model.loss_normalization).")

"""Pallas flash attention with segment ids, causal and prefix-LM masking, grouped-query attention
and a fused T5 relative-position bias.

Semantics and layout are those of `reference.reference_attention`: q [B, Lq, H, D], k and v
[B, Lk, Hkv, D] with H % Hkv == 0, int32 segment ids [B, L] with 0 marking padding, optional
prefix-LM flags [B, L], and an optional T5 bias given as the per-head bucket table
[H, num_buckets]. The forward pass uses an online softmax; the
backward pass is two Pallas kernels (dk/dv and dq/d-table) behind a `jax.custom_vjp`. No
[B, H, Lq, Lk] array is ever written to HBM: logits, probabilities and their gradients exist
only as [block_q, block_k] tiles inside a kernel.

How the bias is fused
  The bucket of (k_pos - q_pos) is a step function of the relative distance d = k_pos - q_pos.
  At trace time we evaluate `reference.relative_position_bucket` once, on the host, over every
  distance up to where it saturates, and turn it into a sorted list of intervals
  [start_n, start_{n+1}) of d with a constant bucket. Inside the kernel a tile's bias is a chain
  of `where(d >= start_n, table[h, bucket_n], ...)` on iota-derived distances: integer compares
  only, so the buckets are bit-identical on every backend (no device `log`). Tiles lying wholly
  in the first or last interval (far from the diagonal, which is most tiles once
  L >> max_distance) add a single scalar instead; the kv loop is split into those three ranges
  so each range runs a statically specialised body.

How the bias gradient is accumulated (no atomics)
  d(table)[h, b] = sum of dS over the (q, k) pairs in bucket b. The dq kernel owns one
  (batch, head, q-block) and already loops over every kv block of that row, so it keeps a
  private [1, num_buckets] f32 accumulator in registers/vregs: constant tiles add sum(dS) to
  one bucket, band tiles add per-interval sums (differences of the cumulative sums
  sum(dS * [d >= start_n])). Each program writes its partial table to its own slot of a
  [B, H, num_q_blocks, 1, num_buckets] array, and XLA sums those afterwards. Every slot has
  exactly one writer, so the result is deterministic and needs no atomics; the partial array
  is tiny (B * H * Lq / block_q * num_buckets floats).

Backends
  GPU: the Triton lowering, chosen explicitly with `pallas.triton.CompilerParams`. Reasons:
    * it runs in jax 0.10 and 0.11 on Ampere and Hopper alike, whereas Mosaic GPU targets
      Hopper and later only;
    * the per-element bias and mask arithmetic is ordinary tensor code in Triton, whereas Mosaic
      GPU wants warpgroup-level programming (TMA, wgmma layouts, barriers) to be fast, and in
      jax 0.10 `pl.pallas_call` with Mosaic GPU is already deprecated in favour of the separate
      `plgpu.kernel` API;
    * the three kernel bodies are then shared with the TPU and interpreter paths, so the CPU
      tests exercise the exact code the GPU compiles.
    Costs: a warp-specialised Mosaic GPU (FA3-style) kernel could go faster on H100, and jax
    0.11 deprecates the Pallas Triton backend, so a Mosaic GPU port (`plgpu.kernel`) is the
    long-term path once the lowering is removed.
  TPU: Mosaic. Arrays are transposed to [B, H, L, D] (Mosaic needs the two minor block dims
    tiled), the head dim is padded to a multiple of 128 and the table lives in SMEM.
  CPU: `interpret=True` (Pallas' HLO interpreter), for tests and laptops.

Each (batch, head, q-block) program keeps the whole K/V of its (batch, head) addressable and
loops over kv blocks in-kernel with `lax.fori_loop` (the jax Triton kernel's structure). Triton
has no scratch memory, so all accumulators are loop carries; the same code lowers to Mosaic,
where the full-length K/V blocks are VMEM resident (fetched once per (batch, head) because
their block index does not change along the q grid axis). Very long sequences on TPU are
refused when that residency would not fit the VMEM budget.

Grouped-query attention
  Programs run per query head; the K/V BlockSpecs map query head h to kv head h // group, so
  K/V are never repeated in HBM (and on TPU, whose pipeline skips the copy of a block whose
  index did not change, consecutive heads of a group share one K/V fetch). dk/dv: see
  _backward.

Prefix-LM
  A prefix only widens the causal mask, so fully past tiles stay unmasked and cheap. Tiles
  above the diagonal are no longer all skippable: per q block, the kv loop runs up to the last
  prefix key of any prefix query's segment (and per kv block, the q loop starts at the first
  prefix query of any prefix key's segment). XLA computes those bounds from the flags and
  segment ids (_prefix_reach, _kv_loop_ends, _q_loop_starts); they reach the kernels as one int
  per (batch row, block).

Fully masked query rows (padding, or a segment with no visible key) give zero output, an lse
of +inf, and therefore exactly zero gradients.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from flan_mix.kernels import reference

MASK_VALUE = reference.MASK_VALUE
_NT = (((1,), (1,)), ((), ()))  # contract the last dims: a @ b.T
_BACKENDS = ("cpu", "gpu", "tpu")
# Cap on the estimated VMEM a TPU kernel may ask for (full-length K/V residency, double buffered).
_TPU_VMEM_CAP_BYTES = 100 * 2**20


# ----------------------------------------------------------------------------- block sizes


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the three kernels. They change speed, not results.

    block_q/block_k tile the forward pass; *_dkv the dk/dv kernel (one kv block per program,
    looping over q blocks); *_dq the dq/d-table kernel (one q block per program). On GPU every
    block must be a power of two >= 16; on TPU a multiple of 128. Blocks larger than a
    (rounded-up) sequence are shrunk to it. num_warps/num_stages are Triton settings (GPU only;
    None picks a default from the head dim).
    """
    block_q: int = 128
    block_k: int = 128
    block_q_dkv: int = 128
    block_k_dkv: int = 128
    block_q_dq: int = 128
    block_k_dq: int = 128
    num_warps: int | None = None
    num_stages: int | None = None

    @classmethod
    def get_default(cls, backend: str, head_dim: int = 128) -> "BlockSizes":
        """Per-backend defaults. Untuned on hardware so far (no GPU/TPU was available)."""
        if backend == "gpu":
            # FlashAttention-2 style shapes: a tall q tile for the forward and dq passes, a tall
            # kv tile for dk/dv, and narrow inner tiles to keep Triton's register use in check.
            return cls(block_q=128, block_k=64, block_q_dkv=32, block_k_dkv=128,
                       block_q_dq=128, block_k_dq=32,
                       num_warps=4 if head_dim <= 64 else 8, num_stages=2)
        if backend == "tpu":
            # 128 is the lane width: the smallest tile that keeps every slice lane aligned.
            return cls()
        if backend == "cpu":
            # Interpret mode: fewer, larger tiles mean fewer interpreted loop trips.
            return cls()
        raise ValueError(f"unknown backend {backend!r}; expected one of {_BACKENDS}")

    def tile_sizes(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in
                ("block_q", "block_k", "block_q_dkv", "block_k_dkv", "block_q_dq", "block_k_dq")}


# ----------------------------------------------------------------------------- T5 buckets


class _Buckets(NamedTuple):
    """The bucket function as intervals of d = k_pos - q_pos.

    Interval n is [starts[n], starts[n+1]) and has bucket ids[n]; starts[0] is -inf (stored as
    None) and the last interval runs to +inf.
    """
    num_buckets: int
    starts: tuple[int | None, ...]
    ids: tuple[int, ...]

    @property
    def first_end(self) -> int:  # d < first_end  <=>  d lies in the first interval
        return self.starts[1]

    @property
    def last_start(self) -> int:  # d >= last_start  <=>  d lies in the last interval
        return self.starts[-1]


@functools.lru_cache(maxsize=64)
def _bucket_intervals(num_buckets: int, bidirectional: bool, max_distance: int) -> _Buckets:
    """Tabulates reference.relative_position_bucket into constant-bucket intervals of d.

    Evaluated once per config, on the host CPU when it is available, so the kernel's buckets do
    not depend on the accelerator's float `log`. The T5 buckets saturate beyond max_distance,
    so tabulating |d| <= 2 * max_distance + 2 covers every distinct value; we check that the
    ends are flat.
    """
    per_side = num_buckets // 2 if bidirectional else num_buckets
    if per_side // 2 < 1 or max_distance <= per_side // 2:
        raise ValueError(
            f"unsupported T5 bias config num_buckets={num_buckets}, bidirectional={bidirectional},"
            f" max_distance={max_distance}: need at least 2 exact buckets per direction"
            f" (num_buckets >= {4 if bidirectional else 2}) and max_distance > the number of exact"
            " buckets")
    reach = 2 * max_distance + 2
    rel = np.arange(-reach, reach + 1)
    try:
        device = jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # CPU backend disabled (JAX_PLATFORMS): use the default device
        device = jax.local_devices()[0]
    with jax.default_device(device), jax.ensure_compile_time_eval():
        far = np.asarray(reference.relative_position_bucket(
            np.array([-8 * reach, 8 * reach], np.int32), bidirectional=bidirectional,
            num_buckets=num_buckets, max_distance=max_distance))
        table = np.asarray(reference.relative_position_bucket(
            rel.astype(np.int32), bidirectional=bidirectional, num_buckets=num_buckets,
            max_distance=max_distance))
    if table[0] != table[1] or table[0] != far[0] or table[-1] != table[-2] or table[-1] != far[1]:
        raise NotImplementedError(
            "relative_position_bucket does not saturate within 2 * max_distance; the fused bias "
            "cannot tabulate it")
    if table.min() < 0 or table.max() >= num_buckets:
        raise ValueError(f"bucket ids out of range [0, {num_buckets})")
    change = np.flatnonzero(np.diff(table)) + 1
    starts = (None,) + tuple(int(rel[c]) for c in change)
    ids = (int(table[0]),) + tuple(int(table[c]) for c in change)
    return _Buckets(num_buckets, starts, ids)


def bucket_ids_from_intervals(rel, buckets: _Buckets):
    """The bucket of each relative position `rel` (int array), as the kernel computes it."""
    out = jnp.full(jnp.shape(rel), buckets.ids[0], jnp.int32)
    for start, bucket in zip(buckets.starts[1:], buckets.ids[1:]):
        out = jnp.where(rel >= start, bucket, out)
    return out


# ----------------------------------------------------------------------------- static config


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything the kernels specialise on (hashable: it is a custom_vjp nondiff arg)."""
    backend: str
    interpret: bool
    layout: str            # "blhd" (GPU, CPU) or "bhld" (TPU)
    causal: bool
    sm_scale: float
    kv_len: int            # true kv length; keys at or past it are padding
    mask_kv_tail: bool     # padding keys exist and no segment ids mark them
    has_segments: bool
    buckets: _Buckets | None
    blocks: BlockSizes
    has_prefix: bool = False  # prefix-LM flags widen the causal mask (needs causal)
    kv_group: int = 1         # query heads per kv head (grouped-query attention)


class _Kind(NamedTuple):
    """How one range of tiles is processed: which bias form, and whether to mask causally."""
    bias: str | None  # None, "first", "last" (scalar bias) or "band" (per-element bias)
    causal: bool      # mask by d <= 0 (or'ed with the prefix-LM flags when there are any)


# ----------------------------------------------------------------------------- kernel helpers


def _iota(shape, axis):
    return lax.broadcasted_iota(jnp.int32, shape, axis)


def _total(x):
    """Sum of a 2-D tile as a [1, 1] array (two keepdims reductions lower everywhere)."""
    return jnp.sum(jnp.sum(x, axis=1, keepdims=True), axis=0, keepdims=True)


def _floor_div(x, n: int, offset: int):
    """floor(x / n) for traced int32 x >= -offset * n (shifted so the division never sees x < 0)."""
    return lax.div(x + offset * n, jnp.int32(n)) - offset


def _clamp(x, lo, hi):
    return jnp.minimum(jnp.maximum(x, lo), hi)


def _load_table(tab_ref, head, st: _Static):
    """This head's bias table as a list of f32 scalars (hoisted out of the kv loop)."""
    if st.buckets is None:
        return None
    nb = st.buckets.num_buckets
    return [tab_ref[head * nb + b] for b in range(nb)]


def _band_bias(d, table, buckets: _Buckets):
    """Per-element bias of a tile straddling bucket boundaries: a chain of integer compares."""
    bias = jnp.full(d.shape, table[buckets.ids[0]], jnp.float32)
    for start, bucket in zip(buckets.starts[1:], buckets.ids[1:]):
        bias = jnp.where(d >= start, table[bucket], bias)
    return bias


def _scores(a, b, *, st: _Static, kind: _Kind, table, delta, k_start, k_axis, q_seg, kv_seg,
            q_pre, kv_pre):
    """Scaled, biased and masked logits of one tile, plus the relative distances d.

    a @ b.T is q @ k.T (k_axis=1) or, in the dk/dv kernel, k @ q.T (k_axis=0); delta is
    k_start - q_start, so d[r, c] = k_pos - q_pos in either orientation.
    """
    s = lax.dot_general(a, b, _NT, preferred_element_type=jnp.float32)
    if st.sm_scale != 1.0:
        s = s * st.sm_scale
    shape = s.shape
    d = None
    if kind.bias == "band" or kind.causal:
        d = _iota(shape, k_axis) - _iota(shape, 1 - k_axis) + delta
    if kind.bias == "first":
        s = s + table[st.buckets.ids[0]]
    elif kind.bias == "last":
        s = s + table[st.buckets.ids[-1]]
    elif kind.bias == "band":
        s = s + _band_bias(d, table, st.buckets)
    mask = None
    if st.has_segments:
        # 0 is padding: it matches nothing, not even other padding.
        mask = (q_seg == kv_seg) & (q_seg != 0)
    if kind.causal:
        causal = d <= 0
        if st.has_prefix:  # t5x decoder_causal_attention: inputs see each other
            causal = causal | ((q_pre != 0) & (kv_pre != 0))
        mask = causal if mask is None else mask & causal
    if st.mask_kv_tail:
        valid = (k_start + _iota(shape, k_axis)) < st.kv_len
        mask = valid if mask is None else mask & valid
    if mask is not None:
        s = jnp.where(mask, s, MASK_VALUE)
    return s, d


def _kv_ranges(i, *, st: _Static, bq: int, bk: int, nk: int, prefix_end=None):
    """kv-block ranges [lo, hi) for q block i (forward and dq kernels), each with its _Kind.

    With a causal mask, blocks wholly above the diagonal are skipped and only blocks that
    straddle it are masked; prefix_end (a block count, with a prefix) extends the loop past the
    diagonal, those tiles being masked too. With a bias, blocks wholly in the first/last bucket
    interval get a scalar bias. Tile (i, j) spans d in [j*bk - i*bq - bq + 1, j*bk + bk - 1 - i*bq].
    """
    end = nk
    if st.causal:  # keep j with min d <= 0
        end = jnp.minimum(lax.div(i * bq + bq - 1, jnp.int32(bk)) + 1, nk)
        if prefix_end is not None:
            end = _clamp(prefix_end, end, nk)
    if st.buckets is None:
        if not st.causal:
            return [(0, nk, _Kind(None, False))]
        full = _clamp(lax.div(i * bq + 1, jnp.int32(bk)), 0, end)  # max d <= 0: no mask needed
        return [(0, full, _Kind(None, False)), (full, end, _Kind(None, True))]
    p, f = st.buckets.first_end, st.buckets.last_start
    off = (abs(p) + abs(f)) // min(bq, bk) + 2
    # max d < p  <=>  j < floor((p + i*bq) / bk)
    j1 = _clamp(_floor_div(p + i * bq, bk, off), 0, end)
    # min d >= f  <=>  j >= ceil((f + i*bq + bq - 1) / bk)
    j2 = _clamp(_floor_div(f + i * bq + bq - 1 + bk - 1, bk, off), j1, end)
    # A first-interval tile has max d <= p - 1, so it needs no causal mask when p <= 1.
    return [(0, j1, _Kind("first", st.causal and p > 1)),
            (j1, j2, _Kind("band", st.causal)),
            (j2, end, _Kind("last", st.causal))]


def _q_ranges(j, *, st: _Static, bq: int, bk: int, nq: int, prefix_start=None):
    """q-block ranges for kv block j (dk/dv kernel): the mirror image of _kv_ranges."""
    start = 0
    if st.causal:  # keep i with min d <= 0, i.e. i*bq + bq - 1 >= j*bk
        start = jnp.minimum(lax.div(j * bk, jnp.int32(bq)), nq)
        if prefix_start is not None:
            start = _clamp(prefix_start, 0, start)
    if st.buckets is None:
        if not st.causal:
            return [(0, nq, _Kind(None, False))]
        full = _clamp(lax.div(j * bk + bk - 1 + bq - 1, jnp.int32(bq)), start, nq)
        return [(start, full, _Kind(None, True)), (full, nq, _Kind(None, False))]
    p, f = st.buckets.first_end, st.buckets.last_start
    off = (abs(p) + abs(f)) // min(bq, bk) + 2
    # min d >= f  <=>  i < floor((j*bk - f + 1) / bq)
    i1 = _clamp(_floor_div(j * bk - f + 1, bq, off), start, nq)
    # max d < p  <=>  i >= ceil((j*bk + bk - p) / bq)
    i2 = _clamp(_floor_div(j * bk + bk - p + bq - 1, bq, off), i1, nq)
    return [(start, i1, _Kind("last", st.causal)),
            (i1, i2, _Kind("band", st.causal)),
            (i2, nq, _Kind("first", st.causal and p > 1))]


def _run_ranges(ranges, body: Callable, carry):
    for lo, hi, kind in ranges:
        carry = lax.fori_loop(lo, hi, functools.partial(body, kind=kind), carry)
    return carry


def _add_dbias(acc, ds, d, kind: _Kind, buckets: _Buckets):
    """Adds this tile's d(table) contribution to the [1, num_buckets_padded] accumulator."""
    lane = _iota(acc.shape, 1)

    def add(acc, bucket, value):  # value: [1, 1]
        return acc + jnp.where(lane == bucket, value, 0.0)

    if kind.bias == "first":
        return add(acc, buckets.ids[0], _total(ds))
    if kind.bias == "last":
        return add(acc, buckets.ids[-1], _total(ds))
    # Band tile: with C_n = sum(ds * [d >= starts[n]]) (C_0 = sum(ds)), interval n holds
    # C_n - C_{n+1}. One masked reduction per boundary.
    prev = _total(ds)
    for start, bucket in zip(buckets.starts[1:], buckets.ids[:-1]):
        tail = _total(jnp.where(d >= start, ds, 0.0))
        acc = add(acc, bucket, prev - tail)
        prev = tail
    return add(acc, buckets.ids[-1], prev)


# ----------------------------------------------------------------------------- kernels


def _prefix_bound(bound_ref, block):
    """This block's prefix loop bound, from its batch row's [1, num_blocks] ints."""
    return None if bound_ref is None else bound_ref[0, block]


def _fwd_kernel(q_ref, k_ref, v_ref, qseg_ref, kvseg_ref, qpre_ref, kvpre_ref, bound_ref, tab_ref,
                o_ref, lse_ref, *, st: _Static):
    head, qi = pl.program_id(1), pl.program_id(2)
    bq, bk = st.blocks.block_q, st.blocks.block_k
    nk = k_ref.shape[0] // bk
    q_start = qi * bq
    q = q_ref[...]
    q_seg = qseg_ref[...] if st.has_segments else None  # [bq, 1]
    q_pre = qpre_ref[...] if st.has_prefix else None    # [bq, 1]
    table = _load_table(tab_ref, head, st)

    def body(j, carry, kind):
        m, l, acc = carry
        k_start = pl.multiple_of(j * bk, bk)
        k = k_ref[pl.ds(k_start, bk), :]
        v = v_ref[pl.ds(k_start, bk), :]
        kv_seg = kvseg_ref[:, pl.ds(k_start, bk)] if st.has_segments else None  # [1, bk]
        kv_pre = kvpre_ref[:, pl.ds(k_start, bk)] if st.has_prefix else None
        s, _ = _scores(q, k, st=st, kind=kind, table=table, delta=k_start - q_start,
                       k_start=k_start, k_axis=1, q_seg=q_seg, kv_seg=kv_seg, q_pre=q_pre,
                       kv_pre=kv_pre)
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new)
        l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
        acc = alpha * acc + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return m_new, l, acc

    init = (jnp.full((bq, 1), MASK_VALUE, jnp.float32), jnp.zeros((bq, 1), jnp.float32),
            jnp.zeros(q.shape, jnp.float32))
    ranges = _kv_ranges(qi, st=st, bq=bq, bk=bk, nk=nk, prefix_end=_prefix_bound(bound_ref, qi))
    m, l, acc = _run_ranges(ranges, body, init)
    # A row whose running max never left MASK_VALUE saw no visible key. Its l and acc hold
    # exp(0)-weighted garbage from the masked entries (for other rows that garbage is wiped by
    # the rescale alpha = exp(MASK_VALUE - real max) = 0), so zero it explicitly.
    empty = m < 0.5 * MASK_VALUE
    o_ref[...] = jnp.where(empty, 0.0, acc / l).astype(o_ref.dtype)
    # lse = +inf makes the backward's exp(s - lse) exactly 0 on empty rows.
    lse_ref[...] = jnp.where(empty, jnp.inf, m + jnp.log(l))


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qseg_ref, kvseg_ref, qpre_ref,
                kvpre_ref, bound_ref, tab_ref, dk_ref, dv_ref, *, st: _Static):
    """One kv block; loops over q blocks in the transposed orientation (rows = keys).

    Working on s.T = k @ q.T puts the per-query lse/delta on the lane axis as [1, block_q]
    rows, and every matmul is then a plain or rhs-transposed one.
    """
    head, kj = pl.program_id(1), pl.program_id(2)
    bq, bk = st.blocks.block_q_dkv, st.blocks.block_k_dkv
    nq = q_ref.shape[0] // bq
    k_start = kj * bk
    k = k_ref[...]
    v = v_ref[...]
    kv_seg = kvseg_ref[...] if st.has_segments else None  # [bk, 1]
    kv_pre = kvpre_ref[...] if st.has_prefix else None    # [bk, 1]
    table = _load_table(tab_ref, head, st)

    def body(i, carry, kind):
        dk, dv = carry
        q_start = pl.multiple_of(i * bq, bq)
        q = q_ref[pl.ds(q_start, bq), :]
        do = do_ref[pl.ds(q_start, bq), :]
        lse = lse_ref[:, pl.ds(q_start, bq)]      # [1, bq]
        delta = delta_ref[:, pl.ds(q_start, bq)]  # [1, bq]
        q_seg = qseg_ref[:, pl.ds(q_start, bq)] if st.has_segments else None
        q_pre = qpre_ref[:, pl.ds(q_start, bq)] if st.has_prefix else None
        s, _ = _scores(k, q, st=st, kind=kind, table=table, delta=k_start - q_start,
                       k_start=k_start, k_axis=0, q_seg=q_seg, kv_seg=kv_seg, q_pre=q_pre,
                       kv_pre=kv_pre)
        p = jnp.exp(s - lse)  # [bk, bq]; masked entries and empty rows give exactly 0
        dv = dv + jnp.dot(p.astype(do.dtype), do, preferred_element_type=jnp.float32)
        dp = lax.dot_general(v, do, _NT, preferred_element_type=jnp.float32)
        ds = p * (dp - delta)
        dk = dk + jnp.dot(ds.astype(q.dtype), q, preferred_element_type=jnp.float32)
        return dk, dv

    init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    ranges = _q_ranges(kj, st=st, bq=bq, bk=bk, nq=nq, prefix_start=_prefix_bound(bound_ref, kj))
    dk, dv = _run_ranges(ranges, body, init)
    if st.sm_scale != 1.0:
        dk = dk * st.sm_scale
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qseg_ref, kvseg_ref, qpre_ref,
               kvpre_ref, bound_ref, tab_ref, dq_ref, dtab_ref, *, st: _Static):
    """One q block; loops over kv blocks, accumulating dq and this block's partial d(table)."""
    head, qi = pl.program_id(1), pl.program_id(2)
    bq, bk = st.blocks.block_q_dq, st.blocks.block_k_dq
    nk = k_ref.shape[0] // bk
    q_start = qi * bq
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]      # [bq, 1]
    delta = delta_ref[...]  # [bq, 1]
    q_seg = qseg_ref[...] if st.has_segments else None
    q_pre = qpre_ref[...] if st.has_prefix else None
    table = _load_table(tab_ref, head, st)

    def body(j, carry, kind):
        dq, dtab = carry
        k_start = pl.multiple_of(j * bk, bk)
        k = k_ref[pl.ds(k_start, bk), :]
        v = v_ref[pl.ds(k_start, bk), :]
        kv_seg = kvseg_ref[:, pl.ds(k_start, bk)] if st.has_segments else None
        kv_pre = kvpre_ref[:, pl.ds(k_start, bk)] if st.has_prefix else None
        s, d = _scores(q, k, st=st, kind=kind, table=table, delta=k_start - q_start,
                       k_start=k_start, k_axis=1, q_seg=q_seg, kv_seg=kv_seg, q_pre=q_pre,
                       kv_pre=kv_pre)
        p = jnp.exp(s - lse)
        dp = lax.dot_general(do, v, _NT, preferred_element_type=jnp.float32)
        ds = p * (dp - delta)
        dq = dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
        if dtab is not None:
            dtab = _add_dbias(dtab, ds, d, kind, st.buckets)
        return dq, dtab

    dtab0 = None
    if dtab_ref is not None:
        dtab0 = jnp.zeros((1, dtab_ref.shape[-1]), jnp.float32)
    init = (jnp.zeros(q.shape, jnp.float32), dtab0)
    ranges = _kv_ranges(qi, st=st, bq=bq, bk=bk, nk=nk, prefix_end=_prefix_bound(bound_ref, qi))
    dq, dtab = _run_ranges(ranges, body, init)
    if st.sm_scale != 1.0:
        dq = dq * st.sm_scale
    dq_ref[...] = dq.astype(dq_ref.dtype)
    if dtab_ref is not None:
        dtab_ref[...] = dtab


# ----------------------------------------------------------------------------- pallas_calls


def _seq_spec(st: _Static, rows: int, head_dim: int, blocked: bool, group: int = 1):
    """BlockSpec for a [B, L, H, D] (or [B, H, L, D] on TPU) array: one block of `rows` rows
    per grid step along axis 2 when `blocked`, else the whole sequence. The grid runs over query
    heads; group > 1 maps query head h to head h // group of a K/V array."""
    sq = pl.squeezed
    # lax.div, not //: heads are >= 0, and floor division lowers through `sign`, which Mosaic
    # only lowers with a TPU attached.
    hd = (lambda h: h) if group == 1 else (lambda h: lax.div(h, jnp.int32(group)))
    if st.layout == "bhld":
        if blocked:
            return pl.BlockSpec((sq, sq, rows, head_dim), lambda b, h, n: (b, hd(h), n, 0))
        return pl.BlockSpec((sq, sq, rows, head_dim), lambda b, h, n: (b, hd(h), 0, 0))
    if blocked:
        return pl.BlockSpec((sq, rows, sq, head_dim), lambda b, h, n: (b, n, hd(h), 0))
    return pl.BlockSpec((sq, rows, sq, head_dim), lambda b, h, n: (b, 0, hd(h), 0))


def _col_spec(rows: int, per_head: bool, blocked: bool):
    """[B, (H,) L, 1] per-row values (segment ids, lse, delta) as [rows, 1] columns."""
    def index(b, h, n):
        row = n if blocked else 0
        return (b, h, row, 0) if per_head else (b, row, 0)
    sq = pl.squeezed
    shape = (sq, sq, rows, 1) if per_head else (sq, rows, 1)
    return pl.BlockSpec(shape, index)


def _row_spec(length: int, per_head: bool):
    """[B, (H,) 1, L] per-row values as one lane-major [1, L] row (the whole sequence)."""
    def index(b, h, n):
        return (b, h, 0, 0) if per_head else (b, 0, 0)
    sq = pl.squeezed
    shape = (sq, sq, 1, length) if per_head else (sq, 1, length)
    return pl.BlockSpec(shape, index)


def _bounds_spec(st: _Static, num_blocks: int):
    """[B, 1, num_blocks] prefix loop bounds: the batch row's ints, read as scalars. The unit
    axis makes the block's two minor dims whole, as Mosaic requires; SMEM on TPU."""
    shape, index = (pl.squeezed, 1, num_blocks), lambda b, h, n: (b, 0, 0)
    if st.backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        return pl.BlockSpec(shape, index, memory_space=pltpu.SMEM)
    return pl.BlockSpec(shape, index)


def _table_spec(st: _Static, size: int):
    if st.buckets is None:
        return None
    if st.backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        return pl.BlockSpec(memory_space=pltpu.SMEM)  # scalar reads
    return pl.BlockSpec((size,), lambda b, h, n: (0,))


def _compiler_params(st: _Static, vmem_bytes: int):
    if st.backend == "gpu":
        from jax.experimental.pallas import triton as pltriton
        return pltriton.CompilerParams(num_warps=st.blocks.num_warps,
                                       num_stages=st.blocks.num_stages)
    if st.backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        if vmem_bytes > _TPU_VMEM_CAP_BYTES:
            raise ValueError(
                f"flash_attention on TPU keeps each (batch, head)'s full sequence in VMEM; this "
                f"call needs about {vmem_bytes / 2**20:.0f} MiB (cap {_TPU_VMEM_CAP_BYTES >> 20} "
                "MiB). Shorten the sequence, shrink the head dim, or use implementation='xla'.")
        return pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel"),
            vmem_limit_bytes=int(min(max(vmem_bytes * 1.25, 32 * 2**20), _TPU_VMEM_CAP_BYTES)))
    return None


def _vmem_estimate(blocks_bytes: int, rows: int, cols: int, tile_elems: int) -> int:
    """Rough TPU VMEM need: double-buffered blocks plus ~8 f32 [block, block] temporaries.

    `rows` counts the elements of lane-major [1, L] rows (padded to 8 sublanes of 4 bytes) and
    `cols` those of [block, 1] columns (padded to 128 lanes of 4 bytes).
    """
    return 2 * (blocks_bytes + 32 * rows + 512 * cols) + 8 * 4 * tile_elems


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape)) * jnp.dtype(dtype).itemsize


def _num_heads(q, st: _Static) -> int:
    return q.shape[1] if st.layout == "bhld" else q.shape[2]


def _seq_len(x, st: _Static) -> int:
    return x.shape[2] if st.layout == "bhld" else x.shape[1]


def _cost(st: _Static, batch, heads, lq, lk, d, matmuls, arrays) -> pl.CostEstimate:
    pairs = batch * heads * lq * lk // (2 if st.causal else 1)
    return pl.CostEstimate(flops=int(2 * matmuls * pairs * d), transcendentals=int(pairs),
                           bytes_accessed=int(sum(a.size * a.dtype.itemsize for a in arrays)))


class _Prefix(NamedTuple):
    """Prefix-LM inputs on the padded lengths, all int32 (see _prefix_reach)."""
    q_flags: jax.Array   # [B, Lq]
    kv_flags: jax.Array  # [B, Lk]
    reach: jax.Array     # [B, Lq]: 1 + the last key prefix query t sees, 0 for other queries
    first: jax.Array     # [B, Lk]: the first query that sees prefix key k, _FAR for other keys


_FAR = 2**30  # "no query": larger than any position, small enough not to overflow


def _prefix_reach(prefix, q_segment_ids, kv_segment_ids):
    """Per-position reach / first of the prefix-LM mask (unpadded [B, L] inputs).

    Exact per segment when the ids lie in [0, L]; other ids are folded into that range, so two
    segments may share a group, which only loosens the bounds (more tiles visited, still masked).
    """
    batch, length = prefix.shape
    flags = prefix != 0
    if q_segment_ids is None:
        q_segment_ids = kv_segment_ids = jnp.ones((batch, length), jnp.int32)
    q_on, k_on = flags & (q_segment_ids != 0), flags & (kv_segment_ids != 0)
    group = lambda seg: jnp.where(seg == 0, 0, jnp.clip(seg, 1, length))
    qg, kg = group(q_segment_ids), group(kv_segment_ids)
    pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    per_row = lambda f: jax.vmap(functools.partial(f, num_segments=length + 1))
    last_key = per_row(jax.ops.segment_max)(jnp.where(k_on, pos, -1), kg)
    first_query = per_row(jax.ops.segment_min)(jnp.where(q_on, pos, _FAR), qg)
    reach = jnp.where(q_on, jnp.take_along_axis(last_key, qg, axis=1) + 1, 0)
    first = jnp.where(k_on, jnp.take_along_axis(first_query, kg, axis=1), _FAR)
    # Empty groups hold the reductions' identities (int32 min / max): clip them to "none".
    return jnp.maximum(reach, 0), jnp.minimum(first, _FAR)


def _kv_loop_ends(pre: _Prefix, bq: int, bk: int):
    """[B, Lq / bq]: per q block, the number of kv blocks its prefix queries need."""
    batch, lq = pre.reach.shape
    top = jnp.max(pre.reach.reshape(batch, lq // bq, bq), axis=-1)
    return (top + bk - 1) // bk


def _q_loop_starts(pre: _Prefix, bq: int, bk: int):
    """[B, Lk / bk]: per kv block, the first q block that sees one of its prefix keys."""
    batch, lk = pre.first.shape
    low = jnp.min(pre.first.reshape(batch, lk // bk, bk), axis=-1)
    return low // bq


def _prefix_inputs(st: _Static, pre: _Prefix | None, bq: int, bk: int, lq: int, lk: int,
                   q_loop: bool):
    """(arrays, specs) for the kernels' qpre, kvpre and bound refs (all None without a prefix).

    The kv-looping kernels (forward, dq) take q flags as a [bq, 1] column and kv flags as a
    whole [1, Lk] row; the q-looping dk/dv kernel the transpose.
    """
    if pre is None:
        return (None,) * 3, [None] * 3
    if q_loop:
        bounds = _q_loop_starts(pre, bq, bk)
        return ((pre.q_flags[:, None, :], pre.kv_flags[:, :, None], bounds[:, None, :]),
                [_row_spec(lq, per_head=False), _col_spec(bk, per_head=False, blocked=True),
                 _bounds_spec(st, bounds.shape[1])])
    bounds = _kv_loop_ends(pre, bq, bk)
    return ((pre.q_flags[:, :, None], pre.kv_flags[:, None, :], bounds[:, None, :]),
            [_col_spec(bq, per_head=False, blocked=True), _row_spec(lk, per_head=False),
             _bounds_spec(st, bounds.shape[1])])


def _forward(st: _Static, q, k, v, q_seg, kv_seg, pre, table):
    """Runs the forward kernel on padded, kernel-layout arrays. Returns o and lse [B,H,Lq,1]."""
    batch, heads, head_dim = q.shape[0], _num_heads(q, st), q.shape[-1]
    lq, lk = _seq_len(q, st), _seq_len(k, st)
    bq, bk = st.blocks.block_q, st.blocks.block_k
    seg_args = (q_seg[:, :, None], kv_seg[:, None, :]) if st.has_segments else (None, None)
    pre_args, pre_specs = _prefix_inputs(st, pre, bq, bk, lq, lk, q_loop=False)
    in_specs = [
        _seq_spec(st, bq, head_dim, blocked=True),
        _seq_spec(st, lk, head_dim, blocked=False, group=st.kv_group),
        _seq_spec(st, lk, head_dim, blocked=False, group=st.kv_group),
        _col_spec(bq, per_head=False, blocked=True) if st.has_segments else None,
        _row_spec(lk, per_head=False) if st.has_segments else None,
        *pre_specs,
        _table_spec(st, 0 if table is None else table.shape[0]),
    ]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((batch, heads, lq, 1), jnp.float32)]
    out_specs = [_seq_spec(st, bq, head_dim, blocked=True), _col_spec(bq, True, True)]
    vmem = _vmem_estimate(_nbytes((2 * bq + 2 * lk, head_dim), q.dtype), rows=lk,
                          cols=2 * bq, tile_elems=bq * bk)
    o, lse = pl.pallas_call(
        functools.partial(_fwd_kernel, st=st),
        grid=(batch, heads, lq // bq),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=_compiler_params(st, vmem),
        cost_estimate=_cost(st, batch, heads, lq, lk, head_dim, 2, (q, k, v)),
        interpret=st.interpret,
        name="flan_flash_fwd",
    )(q, k, v, *seg_args, *pre_args, table)
    return o, lse


def _backward(st: _Static, q, k, v, q_seg, kv_seg, pre, table, o, lse, do):
    """dq, dk, dv (kernel layout) and the [H, num_buckets_padded] table gradient (or None)."""
    batch, heads, head_dim = q.shape[0], _num_heads(q, st), q.shape[-1]
    lq, lk = _seq_len(q, st), _seq_len(k, st)
    # delta_i = sum_d o_id * do_id: the softmax-backward row term, computed once by XLA.
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)
    if st.layout == "blhd":
        delta = jnp.swapaxes(delta, 1, 2)  # -> [B, H, Lq]
    delta_col, lse_col = delta[..., None], lse                  # [B, H, Lq, 1]
    delta_row, lse_row = delta[:, :, None, :], lse.reshape(batch, heads, 1, lq)  # [B, H, 1, Lq]
    if st.has_segments:
        q_seg_col, q_seg_row = q_seg[:, :, None], q_seg[:, None, :]
        kv_seg_col, kv_seg_row = kv_seg[:, :, None], kv_seg[:, None, :]
    else:
        q_seg_col = q_seg_row = kv_seg_col = kv_seg_row = None
    seg = st.has_segments
    table_spec = _table_spec(st, 0 if table is None else table.shape[0])
    group = st.kv_group

    # dk, dv: grid over (query head, kv block). With grouped heads each program writes its query
    # head's share of dk/dv to a private f32 slot of a [B, Lk, H, D] array, and XLA sums each
    # group afterwards, rather than one program per kv head looping over its group:
    #   * parallelism stays B * H * Lk / block programs; with few kv heads (multi-query: one)
    #     a per-kv-head grid leaves most GPU SMs / TPU cores idle at small batch;
    #   * the kernel body and its BlockSpecs are unchanged and work for any group size (a
    #     [group, ...] q block would need power-of-two groups on Triton; Qwen uses 7);
    #   * one writer per slot: deterministic, no atomics, as for the table gradient.
    # The cost is group x 2 f32 partial arrays in HBM (linear in L, like an f32 copy of q).
    bq, bk = st.blocks.block_q_dkv, st.blocks.block_k_dkv
    pre_args, pre_specs = _prefix_inputs(st, pre, bq, bk, lq, lk, q_loop=True)
    part_dtype = lambda x: x.dtype if group == 1 else jnp.float32
    head_axis = 1 if st.layout == "bhld" else 2
    part_shape = k.shape[:head_axis] + (heads,) + k.shape[head_axis + 1:]
    vmem = _vmem_estimate(_nbytes((2 * lq + 4 * bk, head_dim), q.dtype), rows=3 * lq, cols=bk,
                          tile_elems=bq * bk)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, st=st),
        grid=(batch, heads, lk // bk),
        in_specs=[
            _seq_spec(st, lq, head_dim, blocked=False),
            _seq_spec(st, bk, head_dim, blocked=True, group=group),
            _seq_spec(st, bk, head_dim, blocked=True, group=group),
            _seq_spec(st, lq, head_dim, blocked=False),
            _row_spec(lq, per_head=True),
            _row_spec(lq, per_head=True),
            _row_spec(lq, per_head=False) if seg else None,
            _col_spec(bk, per_head=False, blocked=True) if seg else None,
            *pre_specs,
            table_spec,
        ],
        out_specs=[_seq_spec(st, bk, head_dim, blocked=True),
                   _seq_spec(st, bk, head_dim, blocked=True)],
        out_shape=[jax.ShapeDtypeStruct(part_shape, part_dtype(k)),
                   jax.ShapeDtypeStruct(part_shape, part_dtype(v))],
        compiler_params=_compiler_params(st, vmem),
        cost_estimate=_cost(st, batch, heads, lq, lk, head_dim, 4, (q, k, v, do)),
        interpret=st.interpret,
        name="flan_flash_dkv",
    )(q, k, v, do, lse_row, delta_row, q_seg_row, kv_seg_col, *pre_args, table)
    if group > 1:
        dk, dv = _sum_groups(dk, st, k.dtype), _sum_groups(dv, st, v.dtype)

    # dq and the per-(batch, head, q-block) partial table gradients: grid over q blocks.
    bq, bk = st.blocks.block_q_dq, st.blocks.block_k_dq
    pre_args, pre_specs = _prefix_inputs(st, pre, bq, bk, lq, lk, q_loop=False)
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    out_specs = [_seq_spec(st, bq, head_dim, blocked=True)]
    if st.buckets is not None:
        nbp = pl.next_power_of_2(st.buckets.num_buckets)  # Triton wants power-of-two tiles
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, lq // bq, 1, nbp), jnp.float32))
        out_specs.append(pl.BlockSpec((pl.squeezed,) * 3 + (1, nbp),
                                      lambda b, h, n: (b, h, n, 0, 0)))
    else:
        out_shape.append(None)
        out_specs.append(None)
    vmem = _vmem_estimate(_nbytes((3 * bq + 2 * lk, head_dim), q.dtype), rows=lk, cols=3 * bq,
                          tile_elems=bq * bk)
    dq, dtab = pl.pallas_call(
        functools.partial(_dq_kernel, st=st),
        grid=(batch, heads, lq // bq),
        in_specs=[
            _seq_spec(st, bq, head_dim, blocked=True),
            _seq_spec(st, lk, head_dim, blocked=False, group=group),
            _seq_spec(st, lk, head_dim, blocked=False, group=group),
            _seq_spec(st, bq, head_dim, blocked=True),
            _col_spec(bq, per_head=True, blocked=True),
            _col_spec(bq, per_head=True, blocked=True),
            _col_spec(bq, per_head=False, blocked=True) if seg else None,
            _row_spec(lk, per_head=False) if seg else None,
            *pre_specs,
            table_spec,
        ],
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=_compiler_params(st, vmem),
        cost_estimate=_cost(st, batch, heads, lq, lk, head_dim, 3, (q, k, v, do)),
        interpret=st.interpret,
        name="flan_flash_dq",
    )(q, k, v, do, lse_col, delta_col, q_seg_col, kv_seg_row, *pre_args, table)
    if dtab is not None:
        dtab = jnp.sum(dtab, axis=(0, 2, 3))  # reduce the partial tables: [H, nbp]
    return dq, dk, dv, dtab


def _sum_groups(partial, st: _Static, dtype):
    """[.., H, ..] per-query-head partials -> [.., Hkv, ..]: query head h = kv head * group + i."""
    head_axis, shape = (1 if st.layout == "bhld" else 2), partial.shape
    grouped = partial.reshape(shape[:head_axis] + (shape[head_axis] // st.kv_group, st.kv_group)
                              + shape[head_axis + 1:])
    return jnp.sum(grouped, axis=head_axis + 1).astype(dtype)


# ----------------------------------------------------------------------------- custom_vjp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash_core(st: _Static, q, k, v, q_seg, kv_seg, pre, table):
    return _forward(st, q, k, v, q_seg, kv_seg, pre, _flat_table(table))[0]


def _flash_core_fwd(st: _Static, q, k, v, q_seg, kv_seg, pre, table):
    o, lse = _forward(st, q, k, v, q_seg, kv_seg, pre, _flat_table(table))
    return o, (q, k, v, q_seg, kv_seg, pre, table, o, lse)


def _flash_core_bwd(st: _Static, residuals, do):
    q, k, v, q_seg, kv_seg, pre, table, o, lse = residuals
    dq, dk, dv, dtab = _backward(st, q, k, v, q_seg, kv_seg, pre, _flat_table(table), o, lse,
                                 do)
    dtable = None
    if table is not None:
        dtable = dtab[:, :table.shape[1]].astype(table.dtype)
    return dq, dk, dv, None, None, None, dtable


_flash_core.defvjp(_flash_core_fwd, _flash_core_bwd)


def _flat_table(table):
    """[H, num_buckets] -> flat f32 [H * num_buckets]: 1-D scalar reads work on every backend."""
    return None if table is None else table.astype(jnp.float32).reshape(-1)


# ----------------------------------------------------------------------------- public API


def _resolve_backend(backend: str | None) -> str:
    if backend is None:
        backend = jax.default_backend()
    backend = {"cuda": "gpu", "rocm": "gpu"}.get(backend, backend)
    if backend not in _BACKENDS:
        raise ValueError(f"flash_attention: unknown backend {backend!r}; expected {_BACKENDS}")
    return backend


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _effective_blocks(blocks: BlockSizes, backend: str, lq: int, lk: int,
                      head_dim: int) -> BlockSizes:
    """Validates block sizes for the backend and shrinks blocks longer than the sequence."""
    for name, size in blocks.tile_sizes().items():
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"BlockSizes.{name} must be a positive int, got {size!r}")
        if backend == "gpu" and (size < 16 or size & (size - 1)):
            raise ValueError(f"BlockSizes.{name}={size}: the Triton kernel needs powers of two "
                             ">= 16 (tile shapes and tl.dot minimums)")
        if backend == "tpu" and size % 128:
            raise ValueError(f"BlockSizes.{name}={size}: the TPU kernel needs multiples of 128 "
                             "(lane-aligned slices of the segment-id and lse rows)")

    def fit(size: int, length: int) -> int:
        if backend == "gpu":
            return min(size, max(16, pl.next_power_of_2(length)))
        if backend == "tpu":
            return min(size, _round_up(length, 128))
        return min(size, _round_up(length, 8))

    if backend == "gpu":  # fill in unset Triton settings from the defaults
        default = BlockSizes.get_default("gpu", head_dim)
        blocks = dataclasses.replace(
            blocks, num_warps=blocks.num_warps or default.num_warps,
            num_stages=blocks.num_stages or default.num_stages)
    return dataclasses.replace(
        blocks,
        block_q=fit(blocks.block_q, lq), block_k=fit(blocks.block_k, lk),
        block_q_dkv=fit(blocks.block_q_dkv, lq), block_k_dkv=fit(blocks.block_k_dkv, lk),
        block_q_dq=fit(blocks.block_q_dq, lq), block_k_dq=fit(blocks.block_k_dq, lk))


def _padded_head_dim(head_dim: int, backend: str) -> int:
    if backend == "gpu":
        return max(16, pl.next_power_of_2(head_dim))  # Triton tiles are powers of two
    if backend == "tpu":
        return _round_up(head_dim, 128)  # lane width; a 64-wide tile would use half the MXU anyway
    return head_dim


def _check_inputs(q, k, v, q_segment_ids, kv_segment_ids, bias_table, sm_scale, causal,
                  prefix):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError("flash_attention: q, k and v must be [batch, length, heads, head_dim]; "
                         f"got q{q.shape}, k{k.shape}, v{v.shape}")
    if k.shape != v.shape:
        raise ValueError(f"flash_attention: k{k.shape} and v{v.shape} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(
            f"flash_attention: q{q.shape} and k{k.shape} must agree on batch, heads and head_dim, "
            f"where grouped-query attention needs the {q.shape[2]} query heads to be a multiple "
            f"of the {k.shape[2]} key/value heads")
    if q.shape[1] == 0 or k.shape[1] == 0:
        raise ValueError("flash_attention: empty sequences are not supported")
    if not (q.dtype == k.dtype == v.dtype) or not jnp.issubdtype(q.dtype, jnp.floating):
        raise ValueError("flash_attention: q, k, v must share one floating dtype; got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("flash_attention: pass both q_segment_ids and kv_segment_ids, or neither")
    if q_segment_ids is not None:
        if q_segment_ids.shape != q.shape[:2] or kv_segment_ids.shape != k.shape[:2]:
            raise ValueError(
                f"flash_attention: segment ids must be [batch, length]: expected q {q.shape[:2]} "
                f"and kv {k.shape[:2]}, got {q_segment_ids.shape} and {kv_segment_ids.shape}")
        if not (jnp.issubdtype(q_segment_ids.dtype, jnp.integer)
                and jnp.issubdtype(kv_segment_ids.dtype, jnp.integer)):
            raise ValueError("flash_attention: segment ids must be integers (0 = padding)")
    if bias_table is not None:
        if bias_table.ndim != 2 or bias_table.shape[0] != q.shape[2]:
            raise ValueError(f"flash_attention: bias_table must be [heads={q.shape[2]}, "
                             f"num_buckets]; got {bias_table.shape}")
    if isinstance(sm_scale, jax.Array) or not np.isscalar(sm_scale):
        raise ValueError("flash_attention: sm_scale must be a Python number (it is compiled in)")
    if prefix is not None:
        if not causal:
            raise ValueError("flash_attention: prefix (prefix-LM) needs causal=True: it only "
                             "widens a causal mask")
        if prefix.shape != q.shape[:2] or q.shape[1] != k.shape[1]:
            raise ValueError(
                f"flash_attention: prefix is for self-attention: it must be [batch, length] = "
                f"{q.shape[:2]} with q and k of one length; got prefix {prefix.shape}, q{q.shape}, "
                f"k{k.shape}")
        if not (jnp.issubdtype(prefix.dtype, jnp.integer) or prefix.dtype == jnp.bool_):
            raise ValueError(f"flash_attention: prefix must be int or bool, got {prefix.dtype}")


def flash_attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, causal: bool = False,
                    sm_scale: float = 1.0, bias_table=None, bidirectional: bool = True,
                    max_distance: int = 128, block_sizes: BlockSizes | None = None,
                    interpret: bool | None = None, backend: str | None = None, prefix=None):
    """softmax(sm_scale * q k^T + T5 bias, masked) v, as reference.reference_attention.

    Args:
      q: [B, Lq, H, D]; k, v: [B, Lk, Hkv, D] (Lq != Lk is fine), one floating dtype; H must be
        a multiple of Hkv, and query head h reads kv head h // (H // Hkv).
      q_segment_ids, kv_segment_ids: int [B, Lq] / [B, Lk]; a query sees only keys of its own
        segment, and 0 is padding (sees and is seen by nothing). Pass both or neither.
      causal: key position <= query position (positions counted from 0 in both).
      prefix: optional int/bool [B, L] prefix-LM flags (self-attention, causal only): a flagged
        query also sees the later flagged keys of its segment.
      sm_scale: logit scale (T5 uses 1.0); a Python number.
      bias_table: optional [H, num_buckets] T5 relative-position table; the bucket of
        k_pos - q_pos (over the packed row) is computed in-kernel, and the gradient flows to the
        table. bidirectional / max_distance as in relative_position_bucket.
      block_sizes: tiles; None picks BlockSizes.get_default(backend, head_dim).
      interpret: None runs the Pallas interpreter on CPU and compiles elsewhere.
      backend: "gpu" (Triton), "tpu" (Mosaic) or "cpu"; None means jax.default_backend().
        Naming another backend is for cross-lowering and for running that backend's
        configuration under the interpreter in tests.

    Returns: [B, Lq, H, D] in q.dtype. Queries with no visible key get zeros.
    Lengths and head dims the backend cannot tile are zero-padded, and the padding is masked.
    """
    _check_inputs(q, k, v, q_segment_ids, kv_segment_ids, bias_table, sm_scale, causal, prefix)
    backend = _resolve_backend(backend)
    if interpret is None:
        interpret = backend == "cpu"
    if backend == "cpu" and not interpret:
        raise ValueError("flash_attention: on CPU Pallas kernels only run with interpret=True")
    batch, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    if block_sizes is None:
        block_sizes = BlockSizes.get_default(backend, head_dim)
    blocks = _effective_blocks(block_sizes, backend, lq, lk, head_dim)
    buckets = None
    if bias_table is not None:
        buckets = _bucket_intervals(int(bias_table.shape[1]), bool(bidirectional),
                                    int(max_distance))

    # Pad to whole tiles of every kernel (lcm: fwd and bwd tiles may differ) and to a head dim
    # the backend can tile. Zero q/k columns leave q.k unchanged; zero v columns give zero
    # output columns; padded keys are masked; padded queries are sliced off.
    lq_pad = _round_up(lq, math.lcm(blocks.block_q, blocks.block_q_dkv, blocks.block_q_dq))
    lk_pad = _round_up(lk, math.lcm(blocks.block_k, blocks.block_k_dkv, blocks.block_k_dq))
    d_pad = _padded_head_dim(head_dim, backend)
    has_segments = q_segment_ids is not None
    st = _Static(backend=backend, interpret=bool(interpret),
                 layout="bhld" if backend == "tpu" else "blhd", causal=bool(causal),
                 sm_scale=float(sm_scale), kv_len=lk,
                 mask_kv_tail=lk_pad != lk and not has_segments,
                 has_segments=has_segments, buckets=buckets, blocks=blocks,
                 has_prefix=prefix is not None, kv_group=heads // k.shape[2])

    def prep(x, length):
        x = jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, d_pad - head_dim)))
        return jnp.swapaxes(x, 1, 2) if st.layout == "bhld" else x

    qp, kp, vp = prep(q, lq_pad), prep(k, lk_pad), prep(v, lk_pad)
    q_seg = kv_seg = None
    if has_segments:
        q_seg = jnp.pad(q_segment_ids.astype(jnp.int32), ((0, 0), (0, lq_pad - lq)))
        kv_seg = jnp.pad(kv_segment_ids.astype(jnp.int32), ((0, 0), (0, lk_pad - lk)))
    pre = None
    if prefix is not None:
        reach, first = _prefix_reach(prefix, q_segment_ids, kv_segment_ids)
        pad = lambda x, length, fill=0: jnp.pad(x.astype(jnp.int32), ((0, 0), (0, length - lk)),
                                                constant_values=fill)
        pre = _Prefix(q_flags=pad(prefix != 0, lq_pad), kv_flags=pad(prefix != 0, lk_pad),
                      reach=pad(reach, lq_pad), first=pad(first, lk_pad, _FAR))
    out = _flash_core(st, qp, kp, vp, q_seg, kv_seg, pre, bias_table)
    if st.layout == "bhld":
        out = jnp.swapaxes(out, 1, 2)
    return out[:, :lq, :, :head_dim]

"""Attention benchmark: flan_mix's Pallas flash attention vs XLA, cuDNN and JAX's Pallas GPU kernel.

    python benchmarks/attention.py [--out results.json] [--quick] [--iters 20] [--profile DIR]

Scenarios (bf16), each at L in {512, 2048, 8192} and head dim in {64, 128}:
  causal   decoder self-attention, causal mask, sm_scale = 1/sqrt(D)
  t5_bias  T5 encoder self-attention with the relative-position bias (32 buckets, bidirectional,
           max_distance 128), sm_scale = 1
  packed   packed rows of 4 equal segments, no bias, sm_scale = 1/sqrt(D)
Decoder-only scenarios (DECODER_SCENARIOS; --scenarios gqa_causal,prefix_lm), grouped-query
attention with 4 query heads per key/value head (Llama 3's ratio), sm_scale = 1/sqrt(D):
  gqa_causal  causal self-attention, no segment ids (what cuDNN can run)
  prefix_lm   packed rows of 4 equal segments, each with a prefix-LM mask: its first 20-80%
              (fixed per segment from the seed) attends bidirectionally, the rest causally
Batch and heads follow the FlashAttention-2 paper's convention: 16k tokens per batch
(B = 16384 / L) and H * D = 2048.

Implementations:
  pallas      flan_mix.kernels.flash_attention
  xla         flan_mix.kernels.reference (materialises logits, masks and the bias)
  cudnn       jax.nn.dot_product_attention(implementation="cudnn"), GPU only; it has no segment
              ids and no prefix-LM mask, so not on `packed` or `prefix_lm`; the T5 bias is passed
              materialised; GQA natively (k/v with fewer heads)
  pallas_gpu  jax.experimental.pallas.ops.gpu.attention.mha, GPU only; no bias, no GQA and no
              prefix-LM mask, so only on causal and packed

FLOPs count the matmuls of the dense problem, as FlashAttention papers do: forward
4 * B * H * Lq * Lk * D (halved when causal), forward+backward 3.5x that. `packed` is counted
dense too (none of the kernels skips cross-segment tiles); `prefix_lm` is counted as causal
(its prefixes add visible pairs above the diagonal that this does not count); H is the query
heads (GQA shares k/v, not the matmul work). Peak memory is XLA's compiled
estimate for the forward+backward program: arguments + outputs + temporaries.

On CPU the Pallas kernel only runs in interpret mode, so timings mean nothing: the script then
runs small shapes, checks pallas against xla (output and all gradients) and says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flan_mix.kernels import reference  # noqa: E402
from flan_mix.kernels.flash_attention import flash_attention  # noqa: E402

H100_BF16_DENSE_TFLOPS = 989.0
TOKENS_PER_BATCH = 16384
HIDDEN = 2048


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    causal: bool = False
    bias: bool = False
    segments: int = 0
    kv_group: int = 1      # query heads per key/value head (grouped-query attention when > 1)
    prefix: bool = False   # per-segment prefix-LM flags (needs causal and segments)


SCENARIOS = {
    "causal": Scenario("causal", causal=True),
    "t5_bias": Scenario("t5_bias", bias=True),
    "packed": Scenario("packed", segments=4),
}
# Decoder-only (LLaMA-style SFT) attention; not in the default run, pick with --scenarios.
DECODER_SCENARIOS = {
    "gqa_causal": Scenario("gqa_causal", causal=True, kv_group=4),
    "prefix_lm": Scenario("prefix_lm", causal=True, segments=4, kv_group=4, prefix=True),
}
ALL_SCENARIOS = {**SCENARIOS, **DECODER_SCENARIOS}


@dataclasses.dataclass(frozen=True)
class Shape:
    batch: int
    length: int
    heads: int
    head_dim: int


class NotApplicable(Exception):
    """The implementation cannot express this scenario (recorded as n/a, not as a failure)."""


# ----------------------------------------------------------------------------- problem


def sm_scale(sc: Scenario, shape: Shape) -> float:
    return 1.0 if sc.bias else 1.0 / math.sqrt(shape.head_dim)


def make_inputs(sc: Scenario, shape: Shape, dtype, seed=0):
    """(q, k, v, table, seg, do); seg is None, or segment ids, or (segment ids, prefix flags)
    when sc.prefix: impl_fn unpacks it."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    dims = (shape.batch, shape.length, shape.heads, shape.head_dim)
    if shape.heads % sc.kv_group:
        raise ValueError(f"{sc.name}: {shape.heads} heads do not group by {sc.kv_group}")
    kv_dims = (shape.batch, shape.length, shape.heads // sc.kv_group, shape.head_dim)
    q, do = (jax.random.normal(keys[i], dims, jnp.float32) for i in (0, 3))
    k, v = (jax.random.normal(keys[i], kv_dims, jnp.float32) for i in (1, 2))
    if sc.bias:  # T5 runs with sm_scale = 1 and folds 1/sqrt(D) into its query projection
        q = q / math.sqrt(shape.head_dim)
    q, k, v, do = (x.astype(dtype) for x in (q, k, v, do))
    # Small table values keep the biased logits in a realistic range.
    table = 0.5 * jax.random.normal(keys[4], (shape.heads, 32), jnp.float32)
    seg = None
    if sc.segments:
        per = shape.length // sc.segments
        ids = np.minimum(np.arange(shape.length) // per, sc.segments - 1) + 1
        seg = jnp.asarray(np.broadcast_to(ids, (shape.batch, shape.length)), jnp.int32)
        if sc.prefix:
            seg = (seg, prefix_flags(np.asarray(seg), np.random.default_rng(seed)))
    return q, k, v, table, seg, do


def prefix_flags(segment_ids: np.ndarray, rng: np.random.Generator, low: float = 0.2,
                 high: float = 0.8):
    """int32 prefix-LM flags: the first low..high of each segment (drawn per segment from rng),
    as a prompt before its response; padding (segment 0) unflagged."""
    flags = np.zeros(segment_ids.shape, np.int32)
    for b in range(segment_ids.shape[0]):
        for seg in np.unique(segment_ids[b][segment_ids[b] > 0]):
            where = np.flatnonzero(segment_ids[b] == seg)
            flags[b, where[:int(len(where) * rng.uniform(low, high))]] = 1
    return jnp.asarray(flags)


def impl_fn(name: str, sc: Scenario, shape: Shape, seg):
    """Returns f(q, k, v, table) -> out for one implementation, or raises NotApplicable."""
    scale = sm_scale(sc, shape)
    common = dict(causal=sc.causal, sm_scale=scale, bidirectional=True, max_distance=128)
    if sc.prefix:
        seg, common["prefix"] = seg
    if seg is not None:
        common.update(q_segment_ids=seg, kv_segment_ids=seg)

    if name == "pallas":
        return lambda q, k, v, t: flash_attention(q, k, v, bias_table=t if sc.bias else None,
                                                  **common)
    if name == "xla":
        return lambda q, k, v, t: reference.reference_attention(
            q, k, v, bias_table=t if sc.bias else None, **common)
    if jax.default_backend() != "gpu":
        raise NotApplicable("GPU only")
    if name == "cudnn":
        if sc.segments:
            raise NotApplicable("cuDNN through JAX has no segment ids"
                                + (" and no prefix-LM mask" if sc.prefix else ""))

        def cudnn(q, k, v, t):
            bias = None
            if sc.bias:  # cuDNN only takes the materialised [1, H, L, L] bias
                bias = reference.relative_position_bias(
                    t, shape.length, shape.length, bidirectional=True, max_distance=128)
                bias = bias[None].astype(q.dtype)
            return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale,
                                                is_causal=sc.causal, implementation="cudnn")
        return cudnn
    if name == "pallas_gpu":
        if sc.bias:
            raise NotApplicable("JAX's Pallas GPU kernel has no bias")
        if sc.prefix:
            raise NotApplicable("JAX's Pallas GPU kernel has no prefix-LM mask")
        if sc.kv_group > 1:
            raise NotApplicable("JAX's Pallas GPU kernel has no GQA (k/v need all H heads)")
        from jax.experimental.pallas.ops.gpu import attention as jax_gpu_attention
        return lambda q, k, v, t: jax_gpu_attention.mha(q, k, v, seg, sm_scale=scale,
                                                        causal=sc.causal)
    raise ValueError(f"unknown implementation {name!r}")


def forward_and_backward(fn, with_table: bool):
    """(q, k, v, table, do) -> (out, grads): one forward and the full backward."""
    def run(q, k, v, table, do):
        if with_table:
            out, vjp = jax.vjp(fn, q, k, v, table)
        else:
            out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, table), q, k, v)
        return out, vjp(do.astype(out.dtype))
    return run


FLOP_CONVENTION = "fwd 4*B*H*L*L*D (x0.5 causal), fwd+bwd 3.5x fwd"


def flops(sc: Scenario, shape: Shape) -> tuple[float, float]:
    fwd = 4.0 * shape.batch * shape.heads * shape.length ** 2 * shape.head_dim
    if sc.causal:
        fwd /= 2
    return fwd, 3.5 * fwd


# ----------------------------------------------------------------------------- measuring


def compile_and_time(fn, args, iters: int):
    """Steady-state seconds per call: best of 3 runs of `iters` back-to-back calls, one sync each."""
    compiled = jax.jit(fn).lower(*args).compile()
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                - getattr(mem, "alias_size_in_bytes", 0))
    jax.block_until_ready(compiled(*args))  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(iters):
            out = compiled(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / iters)
    return best, peak


def norm_err(got, want) -> float:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def check_against_xla(sc: Scenario, shape: Shape, dtype, impl: str) -> float:
    """Max normalised error of output and gradients against the f32 XLA reference."""
    q, k, v, table, seg, do = make_inputs(sc, shape, dtype)
    with_table = sc.bias and impl in ("pallas", "xla")
    got = jax.jit(forward_and_backward(impl_fn(impl, sc, shape, seg), with_table))(
        q, k, v, table, do)
    f32 = lambda x: x.astype(jnp.float32)
    want = jax.jit(forward_and_backward(impl_fn("xla", sc, shape, seg), with_table))(
        f32(q), f32(k), f32(v), table, do)
    leaves = zip(jax.tree.leaves(got), jax.tree.leaves(want))
    return max(norm_err(a, b) for a, b in leaves)


def row_start(sc: Scenario, shape: Shape, impl: str, dtype) -> dict:
    """A row's identity: scenario, implementation, dtype, shape and the k/v head count."""
    return dict(scenario=sc.name, impl=impl, dtype=jnp.dtype(dtype).name,
                **dataclasses.asdict(shape), kv_heads=shape.heads // sc.kv_group)


def bench_row(sc: Scenario, shape: Shape, impl: str, dtype, iters: int, check: bool):
    row = row_start(sc, shape, impl, dtype)
    try:
        q, k, v, table, seg, do = make_inputs(sc, shape, dtype)
        fn = impl_fn(impl, sc, shape, seg)
        fwd_flops, total_flops = flops(sc, shape)
        fwd_s, _ = compile_and_time(fn, (q, k, v, table), iters)
        with_table = sc.bias and impl in ("pallas", "xla")
        both_s, peak = compile_and_time(forward_and_backward(fn, with_table),
                                        (q, k, v, table, do), iters)
        row.update(fwd_ms=fwd_s * 1e3, fwd_tflops=fwd_flops / fwd_s / 1e12,
                   fwd_bwd_ms=both_s * 1e3, fwd_bwd_tflops=total_flops / both_s / 1e12,
                   peak_mib=None if peak is None else peak / 2**20)
        if check and impl != "xla":
            row["err_vs_xla"] = check_against_xla(sc, shape, dtype, impl)
    except NotApplicable as e:
        row["note"] = f"n/a: {e}"
    except Exception as e:  # OOM or an implementation's own refusal: record it, keep going
        row["note"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
        traceback.print_exc(limit=1, file=sys.stderr)
    return row


def correctness_row(sc: Scenario, shape: Shape, dtype):
    row = row_start(sc, shape, "pallas", dtype)
    start = time.perf_counter()
    row["err_vs_xla"] = check_against_xla(sc, shape, dtype, "pallas")
    row["note"] = f"interpret mode, checked in {time.perf_counter() - start:.0f}s"
    return row


# ----------------------------------------------------------------------------- reporting


def fmt(x, spec):
    """Formats x with spec ("9.3f"), or a right-aligned "-" of the same width when missing."""
    width = int(spec.split(".")[0])
    return "-".rjust(width) if x is None else format(x, spec)


def print_table(rows):
    header = (f"{'scenario':<11}{'L':>6}{'D':>5}{'B':>4}{'H/Hkv':>7}  {'impl':<11}{'fwd ms':>9}"
              f"{'fwd TF/s':>10}{'f+b ms':>9}{'f+b TF/s':>10}{'peak MiB':>10}{'err':>9}  note")
    print(header)
    print("-" * len(header))
    for r in rows:
        heads = f"{r['heads']}/{r.get('kv_heads', r['heads'])}"
        print(f"{r['scenario']:<11}{r['length']:>6}{r['head_dim']:>5}{r['batch']:>4}{heads:>7}"
              f"  {r['impl']:<11}{fmt(r.get('fwd_ms'), '9.3f')}{fmt(r.get('fwd_tflops'), '10.1f')}"
              f"{fmt(r.get('fwd_bwd_ms'), '9.3f')}{fmt(r.get('fwd_bwd_tflops'), '10.1f')}"
              f"{fmt(r.get('peak_mib'), '10.0f')}{fmt(r.get('err_vs_xla'), '9.1e')}"
              f"  {r.get('note', '')}")


def target_summary(rows):
    """The issue's H100 targets, as ratios measured here."""
    def get(scenario, impl, length, head_dim, key):
        for r in rows:
            if (r["scenario"], r["impl"], r["length"], r["head_dim"]) == (
                    scenario, impl, length, head_dim) and r.get(key):
                return r[key]
        return None

    lines = []
    for length in (2048, 8192):
        for d in (64, 128):
            ours, cudnn = (get("causal", impl, length, d, "fwd_bwd_tflops")
                           for impl in ("pallas", "cudnn"))
            if ours and cudnn:
                lines.append(f"causal L={length} D={d}: fwd+bwd pallas/cudnn = {ours / cudnn:.2f}x"
                             " (target >= 1.0x)")
    for d in (64, 128):
        ours, xla = (get("t5_bias", i, 2048, d, "fwd_bwd_ms") for i in ("pallas", "xla"))
        if ours and xla:
            lines.append(f"t5_bias L=2048 D={d}: fwd+bwd speed-up over XLA = {xla / ours:.2f}x"
                         " (target >= 2x)")
    for sc in SCENARIOS:
        for d in (64, 128):
            tf = get(sc, "pallas", 8192, d, "fwd_tflops")
            if tf:
                lines.append(f"{sc} L=8192 D={d}: forward {tf:.0f} TFLOP/s = "
                             f"{100 * tf / H100_BF16_DENSE_TFLOPS:.0f}% of 989 (target >= 50%)")
    return lines


def package_versions(names=("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")):
    """Installed versions by distribution name (None when absent); nothing is imported."""
    from importlib import metadata
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(packages=("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")) -> dict:
    """What every result file records: date, device, package versions, host, commit and command
    (the other benchmark scripts share it)."""
    dev = jax.devices()[0]
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__)),
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=dict(platform=dev.platform, kind=dev.device_kind, count=jax.device_count()),
        versions=package_versions(packages), host=platform.node(), git_commit=commit,
        command=" ".join([sys.executable] + sys.argv), argv=sys.argv)


def cpu_record(threads: int) -> dict:
    """The CPU facts a CPU-against-torch comparison needs beside its figures (threads and load)."""
    import torch
    return dict(logical_cpus=os.cpu_count(), usable_cores=len(os.sched_getaffinity(0)),
                torch_threads=torch.get_num_threads(), requested_threads=threads,
                xla_flags=os.environ.get("XLA_FLAGS"), load_average_at_start=list(os.getloadavg()))


# ----------------------------------------------------------------------------- running


def timing_shape(length: int, head_dim: int) -> Shape:
    """The FlashAttention-2 papers' convention: 16k tokens per batch and H * D = 2048."""
    return Shape(max(1, TOKENS_PER_BATCH // length), length, HIDDEN // head_dim, head_dim)


def skipped_row(sc: Scenario, shape: Shape, impl: str, dtype, reason: str):
    return row_start(sc, shape, impl, dtype) | dict(note=f"skipped: {reason}")


def benchmark_rows(cases, impls, dtype, iters: int, check_max_len: int = 2048,
                   deadline: float | None = None, progress=None):
    """Times every (scenario, shape) in `cases` with every implementation.

    deadline (a time.perf_counter() value): rows not started by then are recorded as skipped,
    so a caller with a time budget (benchmarks/gpu_suite.py) still gets the whole table.
    Rows with length <= check_max_len also record their error against the f32 XLA reference.
    """
    rows = []
    for sc, shape in cases:
        for impl in impls:
            if deadline is not None and time.perf_counter() >= deadline:
                rows.append(skipped_row(sc, shape, impl, dtype, "time budget used up"))
            else:
                rows.append(bench_row(sc, shape, impl, dtype, iters,
                                      check=shape.length <= check_max_len))
            if progress:
                progress(rows[-1])
    return rows


def correctness_rows(cases, dtype, progress=None):
    """CPU: pallas (interpret mode) against the f32 XLA reference; no timings."""
    rows = []
    for sc, shape in cases:
        rows.append(correctness_row(sc, shape, dtype))
        if progress:
            progress(rows[-1])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write results (with device, versions, date) to this JSON")
    parser.add_argument("--quick", action="store_true", help="one length and head dim only")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma list of {', '.join(ALL_SCENARIOS)}")
    parser.add_argument("--impls", default="pallas,xla,cudnn,pallas_gpu")
    parser.add_argument("--lengths", default=None, help="comma list (default 512,2048,8192)")
    parser.add_argument("--head-dims", default="64,128")
    parser.add_argument("--profile", help="write a jax.profiler trace of the pallas rows here")
    args = parser.parse_args(argv)

    env = environment()
    backend = jax.default_backend()
    scenarios = [ALL_SCENARIOS[s] for s in args.scenarios.split(",")]
    head_dims = [int(d) for d in args.head_dims.split(",")]
    dtype = jnp.bfloat16
    if backend == "cpu":
        # Interpret mode: correctness only, at shapes the interpreter gets through in minutes.
        print("CPU backend: the Pallas kernel runs in interpret mode, so this run only checks "
              "correctness (pallas vs the f32 XLA reference, output and all gradients) at small "
              "shapes. No timings are reported; run on a GPU or TPU for the benchmark.\n")
        lengths = [int(x) for x in (args.lengths or "256").split(",")]
        if args.quick:
            lengths, head_dims = lengths[:1], head_dims[:1]
        # 2 kv heads everywhere: GQA scenarios get kv_group times as many query heads.
        cases = [(sc, Shape(1, length, 2 * sc.kv_group, d)) for sc in scenarios
                 for length in lengths for d in head_dims]
        rows = correctness_rows(cases, dtype, progress=print_progress)
        mode = "correctness-only (CPU, Pallas interpret mode)"
    else:
        lengths = [int(x) for x in (args.lengths or "512,2048,8192").split(",")]
        if args.quick:
            lengths, head_dims = [2048], head_dims[:1]
        cases = [(sc, timing_shape(length, d)) for sc in scenarios for length in lengths
                 for d in head_dims]
        if args.profile:
            jax.profiler.start_trace(args.profile)
        rows = benchmark_rows(cases, args.impls.split(","), dtype, args.iters,
                              progress=print_progress)
        if args.profile:
            jax.profiler.stop_trace()
        mode = "timing"

    print(f"\n{env['device']['kind']} ({backend}), jax {env['versions']['jax']}, {env['date']}"
          f" -- {mode}")
    print_table(rows)
    targets = target_summary(rows) if backend == "gpu" else []
    if targets:
        print("\nTargets (H100 bf16):")
        print("\n".join("  " + t for t in targets))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(env, mode=mode, dtype=jnp.dtype(dtype).name,
                           flop_convention=FLOP_CONVENTION, rows=rows, targets=targets), f,
                      indent=2)
        print(f"\nwrote {args.out}")
    failed = [r for r in rows if r.get("err_vs_xla") is not None and r["err_vs_xla"] > 2e-2]
    if failed:
        print(f"\n{len(failed)} row(s) disagree with the XLA reference beyond 2e-2 (bf16).")
        return 1
    return 0


def print_progress(row):
    state = row.get("note") or (f"fwd+bwd {row['fwd_bwd_ms']:.2f} ms" if "fwd_bwd_ms" in row
                                else "")
    err = row.get("err_vs_xla")
    print(f"  {row['scenario']} L={row['length']} D={row['head_dim']} {row['impl']}: {state}"
          + ("" if err is None else f" err={err:.1e}"), flush=True)


if __name__ == "__main__":
    sys.exit(main())

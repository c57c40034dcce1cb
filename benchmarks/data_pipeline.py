"""Data pipeline benchmark: template, tokenize and pack the Flan 2022 CoT submixture from the real TSVs.

    python benchmarks/data_pipeline.py [--vocab generated|spm32k|PATH] [--num_examples 20000]
                                       [--rss_examples 100000] [--threads 1]
                                       [--out benchmarks/results/data_pipeline_cpu.json]

--vocab picks the tokenizer of every figure (ours, the seqio peer, rss, scale):
  generated  the project's default: a 1,536-piece BPE SentencePiece model (+100 sentinels = 1,636 ids) trained on
             the generated mini-collection (flan_mix.data.vocab);
  spm32k     the Flan-scale one: 32,000 unigram pieces (+100 = 32,100 ids, T5's size and id layout: pad 0, eos 1,
             unk 2), trained offline on every field of the CoT TSVs present plus the generated text
             (flan_mix.data.registration.spm32k_vocabulary); trained on first use (~5 s on 2 cores) and cached
             under $FLAN_MIX_CACHE or ~/.cache/flan_mix/vocab/, keyed by a hash of its input lines and options;
  PATH       any SentencePiece .model file (e.g. T5's spiece.model, if you have it).

What it measures (all on CPU, TF + seqio; nothing here is asserted, the targets are printed next to the figures):

  ours      mixture flan2022_cot (registered with allow_missing_tasks=True: esnli and qed have no TSV here),
            through flan_mix.data.pipeline.get_batches: the mixture sampled in Python by its seqio rates, each
            task streamed in Python (our templates: zero-/few-shot, input inversion; SentencePiece), first-fit
            packing (flan_mix.data.packing, --max_open_rows) to inputs 2048 / targets 512.
  seqio     a peer on the same TSVs and the same vocabulary with seqio alone: TextLineDataSource, a plain tf.strings
            join (question -> inputs, rationale + answer -> targets), seqio.preprocessors.tokenize, append_eos,
            the same lengths with seqio's EncDecFeatureConverter (next-fit packing).
  rss       peak resident memory while streaming --rss_examples examples of a mixed mixture: flan2022_cot and the
            generated mini-collection (gen_train_mixture) at 1:1, which is the mixed mixture that runs offline
            (the other Flan 2022 submixtures need TFDS / NIv2 / HF data that is not on this machine).
  scale     (--scale_examples > 0) the full NIv2 submixture, 1,554 catalog tasks = 3,108 seqio tasks, on
            synthetic task files in the real NIv2 format (written to a temporary directory: random words, 200
            instances each): seconds and RSS to the first batch and peak RSS over the stream. It measures how
            the pipeline scales with the number of tasks, not NIv2 throughput (the text is synthetic).

Counting: examples going in = packed segments coming out (packing trims but never drops an example, so every
example is exactly one segment); tokens = non-pad encoder_input_tokens + non-pad decoder_target_tokens.
Cores: process CPU time (user + system, all threads) over wall time in the timed window is reported as
"cores busy"; per-core rates are examples (tokens) per CPU-second, i.e. total / cores busy. With --threads 1
(the default) TF's inter/intra-op pools and the tf.data private pool are pinned to one thread; the Python
rendering generator is single-threaded under the GIL anyway.
Packing efficiency: non-pad fraction of the packed inputs and of the packed targets, separately.

Short runs flatter the pipeline: each task keeps rendered chunks, a shuffle buffer and prefetched batches, and a
window of a few thousand examples largely reads those (500 examples timed after a 200-example warm-up gave
~5.3k examples/s/core where 20k after a 5k warm-up gave ~1k). Quote figures from --num_examples >= 20000 with the
default warm-up. Tokens per example, and so tokens/s and packing, depend on the vocabulary: compare --vocab
generated with --vocab spm32k (the "cot_sources" section gives tokens per example per CoT file, in the peer's
format, with the chosen vocabulary).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

TARGETS = {"examples_per_s_per_core": 5000.0, "packing_efficiency": 0.95, "peak_rss_gb": 2.0}
FEATURE_LENGTHS = {"inputs": 2048, "targets": 512}
MIXED_MIXTURE = "bench_cot_plus_generated"
PEER_TASK = "bench_seqio_cot_peer"


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_bytes() -> int:
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: kilobytes


def pin_threads(threads: int) -> None:
    """Must run before TensorFlow executes its first op."""
    if threads > 0:
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.threading.set_intra_op_parallelism_threads(threads)


def _with_thread_options(ds: tf.data.Dataset, threads: int) -> tf.data.Dataset:
    if threads <= 0:
        return ds
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = threads
    opts.threading.max_intra_op_parallelism = 1
    return ds.with_options(opts)


def _stop(batches, timeout_s: float = 60.0) -> None:
    """Stops pipeline.get_batches' prefetch thread and waits for it: a thread still inside a TF op when the
    interpreter exits aborts the process ("terminate called without an active exception")."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()
        thread = getattr(batches, "_thread", None)
        if thread is not None:
            thread.join(timeout_s)


def measure(batches, num_examples: int, warmup_examples: int, label: str,
            sample_rss: bool = False, max_seconds: float = 0.0) -> dict:
    """Streams packed batches until num_examples examples went in; times everything after the warm-up.

    The warm-up (warmup_examples examples, untimed) has to drain what the pipeline buffers before the first batch
    (rendered chunks, shuffle buffers and prefetch of every task): a short timed window that reads buffered
    examples measures the buffers, not the pipeline.

    max_seconds > 0 stops earlier, after that much wall time; the result then says stopped_early=True.
    """
    it = iter(batches)
    t_start = time.perf_counter()
    warm = 0
    while warm < warmup_examples:
        warm += int(next(it)["encoder_segment_ids"].max(axis=1).sum())
    t_warm = time.perf_counter() - t_start
    examples = rows = 0
    tok = {"inputs": 0, "targets": 0}
    slots = {"inputs": 0, "targets": 0}
    peak_rss = _rss_bytes()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    last_print = t0
    stopped_early = False
    while examples < num_examples:
        if max_seconds and time.perf_counter() - t0 > max_seconds:
            stopped_early = True
            break
        b = next(it)
        enc, dec = b["encoder_input_tokens"], b["decoder_target_tokens"]
        # Segment ids are 1..n within a row, so the max per row is the number of examples packed into it.
        examples += int(b["encoder_segment_ids"].max(axis=1).sum())
        rows += enc.shape[0]
        tok["inputs"] += int((enc != 0).sum())
        tok["targets"] += int((dec != 0).sum())
        slots["inputs"] += enc.size
        slots["targets"] += dec.size
        if sample_rss:
            peak_rss = max(peak_rss, _rss_bytes())
        now = time.perf_counter()
        if now - last_print > 10:
            print(f"  [{label}] {examples}/{num_examples} examples, {now - t0:.0f}s", flush=True)
            last_print = now
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    _stop(batches)
    cores = cpu / wall if wall > 0 else float("nan")
    tokens = tok["inputs"] + tok["targets"]
    return {
        "examples": examples, "packed_rows": rows, "examples_per_row": examples / rows,
        "wall_s": wall, "cpu_s": cpu, "cores_busy": cores, "warmup_s": t_warm, "warmup_examples": warm,
        "examples_per_s": examples / wall, "tokens_per_s": tokens / wall,
        "examples_per_s_per_core": examples / cpu, "tokens_per_s_per_core": tokens / cpu,
        "nonpad_tokens": {"inputs": tok["inputs"], "targets": tok["targets"]},
        "packing_efficiency": {k: tok[k] / slots[k] for k in tok},
        "peak_rss_sampled_bytes": peak_rss if sample_rss else None,
        "requested_examples": num_examples, "stopped_early": stopped_early,
    }


def load_vocabulary(choice: str):
    """(vocabulary, record): --vocab generated | spm32k | a SentencePiece .model path; the record says what it is,
    where it is cached and how long loading (and, on first use, training) took."""
    import hashlib
    from flan_mix.data import registration, vocab as vocab_lib
    from flan_mix.data.generated import seqio_tasks
    t = time.perf_counter()
    if choice == "generated":
        vocabulary = vocab_lib.get_vocabulary(corpus=seqio_tasks.VOCABULARY_CORPUS)
        how = ("trained offline on the generated mini-collection's rendered train text (BPE), cached by a hash of "
               "its input")
    elif choice == "spm32k":
        vocabulary = registration.spm32k_vocabulary()
        how = ("trained offline (unigram, T5 ids) on every field of the CoT TSVs present plus the generated "
               "mini-collection's rendered train text, cached by a hash of its input (not committed: rebuilt "
               "byte-identical in seconds)")
    else:
        vocabulary = vocab_lib.get_vocabulary(sentencepiece_model_path=choice)
        how = "given as a file"
    seconds = time.perf_counter() - t
    path = vocabulary.sentencepiece_model_file
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    raw = tf.io.gfile.GFile(path, "rb").read()  # the file as cached (seqio's sp_model has the sentinels added)
    proto.ParseFromString(raw)
    record = {"choice": choice, "path": path, "md5": hashlib.md5(raw).hexdigest(), "file_bytes": len(raw),
              "pieces": len(proto.pieces), "extra_ids": vocabulary.extra_ids, "vocab_size": vocabulary.vocab_size,
              "model_type": sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type),
              "ids": {"pad": proto.trainer_spec.pad_id, "eos": proto.trainer_spec.eos_id,
                      "unk": proto.trainer_spec.unk_id, "bos": proto.trainer_spec.bos_id},
              "how": how, "load_or_train_s": seconds}
    return vocabulary, record


def register(vocabulary, allow_missing: bool = True):
    """The generated collection and flan2022_cot, both tokenized with `vocabulary`."""
    from flan_mix.data.flan import flan_tasks
    from flan_mix.data.generated import mixture, seqio_tasks
    seqio_tasks.register_generated_tasks(vocabulary=vocabulary)
    mixture.register_generated_mixture()
    reg = flan_tasks.register_flan2022(vocabulary=vocabulary, allow_missing_tasks=allow_missing,
                                       submixtures=("cot",))
    return reg


def cot_source_stats(vocabulary, cot_dir: str, files: list[str], dropped: list[str]) -> dict:
    """Per CoT file: rows and tokens per example in the seqio peer's format (inputs "Q: question\nLet's think step
    by step.", targets "rationale So the answer is answer."), with `vocabulary`, and which catalog sources are
    absent."""
    from flan_mix.data.flan.sources import cot as cot_source
    sp = vocabulary.tokenizer
    out = {"present": {}, "absent": sorted(dropped)}
    for name in files:
        rows = cot_source.read_cot_tsv(os.path.join(cot_dir, name))
        inputs = sp.encode([f"Q: {r.question}\nLet's think step by step." for r in rows])
        targets = sp.encode([f"{r.rationale} So the answer is {r.answer}." for r in rows])
        li = np.array([len(x) + 1 for x in inputs])  # + EOS
        lt = np.array([len(x) + 1 for x in targets])
        out["present"][name] = {
            "rows": len(rows), "mean_input_tokens": float(li.mean()), "mean_target_tokens": float(lt.mean()),
            "max_input_tokens": int(li.max()), "max_target_tokens": int(lt.max()),
            "chars_per_token": float(sum(len(r.question) + len(r.rationale) + len(r.answer) for r in rows)
                                     / (li.sum() + lt.sum() - 2 * len(rows)))}
    p = out["present"].values()
    rows = sum(v["rows"] for v in p)
    out["total_rows"] = rows
    out["mean_input_tokens"] = sum(v["rows"] * v["mean_input_tokens"] for v in p) / rows
    out["mean_target_tokens"] = sum(v["rows"] * v["mean_target_tokens"] for v in p) / rows
    return out


def register_mixed_mixture() -> dict:
    """flan2022_cot and gen_train_mixture at 1:1 (task rates renormalized within each)."""
    import seqio
    from flan_mix.data import mixing as mix_lib
    from flan_mix.data.generated.mixture import GENERATED_MIXTURE

    def rates(name):
        mix = seqio.MixtureRegistry.get(name)
        return {t.name: mix.get_rate(t) for t in mix.tasks}

    flat = mix_lib.nested_rates({"cot": (1.0, rates("flan2022_cot")),
                                 "generated": (1.0, rates(GENERATED_MIXTURE))})
    mix_lib.register_mixture(MIXED_MIXTURE, flat)
    return {"flan2022_cot": 0.5, GENERATED_MIXTURE: 0.5, "num_tasks": len(flat)}


def register_peer_task(vocabulary, cot_dir: str, files: list[str]) -> str:
    """seqio alone on the same TSVs: no templates, one tf.strings join per example."""
    import seqio
    if PEER_TASK in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(PEER_TASK)

    def to_text(ds):
        def fn(line):
            cols = tf.strings.split(line, "\t")
            question, answer, rationale = cols[0], cols[1], cols[2]
            return {"inputs": tf.strings.join(["Q: ", question, "\nLet's think step by step."]),
                    "targets": tf.strings.join([rationale, " So the answer is ", answer, "."])}
        return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

    features = {k: seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32) for k in ("inputs", "targets")}
    seqio.TaskRegistry.add(
        PEER_TASK,
        source=seqio.TextLineDataSource({"train": [os.path.join(cot_dir, f) for f in files]}),
        preprocessors=[to_text, seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=features,
    )
    return PEER_TASK


def peer_dataset(name: str, batch_size: int, seed: int) -> tf.data.Dataset:
    import seqio
    ds = seqio.get_dataset(name, task_feature_lengths=FEATURE_LENGTHS, dataset_split="train", shuffle=True,
                           num_epochs=None, seed=seed, use_cached=False,
                           feature_converter=seqio.EncDecFeatureConverter(pack=True))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def our_batches(mixture: str, args):
    """flan_mix.data.pipeline.get_batches (TF threads pinned globally by pin_threads)."""
    from flan_mix.data import pipeline
    return pipeline.get_batches(mixture, task_feature_lengths=FEATURE_LENGTHS, global_batch_size=args.batch_size,
                                seed=args.seed, max_open_rows=args.max_open_rows)


def write_synthetic_niv2(root: str, instances: int = 200, seed: int = 0) -> int:
    """One task file per enabled NIv2 catalog task, in the released JSON layout, with random words."""
    import random
    from flan_mix.data.flan import catalog as catalog_lib
    rng = random.Random(seed)
    words = ("the a of to and in is for on with as by at from river city model data table answer question "
             "story person time year way day thing man world life hand part child eye woman place").split()

    def sentence(n):
        return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."

    os.makedirs(os.path.join(root, "tasks"), exist_ok=True)
    records = catalog_lib.load_catalog().by_submixture("niv2", enabled_only=True)
    for rec in records:
        task = {"Definition": [sentence(30)],
                "Positive Examples": [{"input": sentence(40), "output": sentence(5), "explanation": sentence(8)}
                                      for _ in range(3)],
                "Negative Examples": [],
                "Instances": [{"id": f"{rec.name}-{i}", "input": sentence(rng.randint(20, 120)),
                               "output": [sentence(rng.randint(2, 20))]} for i in range(instances)]}
        with open(os.path.join(root, "tasks", rec.loader.name), "w") as f:
            json.dump(task, f)
    return len(records)


def measure_scale(args, vocabulary) -> dict:
    import tempfile
    from flan_mix.data import pipeline
    from flan_mix.data.flan import flan_tasks
    with tempfile.TemporaryDirectory() as root:
        n_files = write_synthetic_niv2(root)
        rss0 = _rss_bytes()
        t = time.perf_counter()
        reg = flan_tasks.register_flan2022(vocabulary=vocabulary, niv2_dir=root, submixtures=("niv2",))
        t_reg = time.perf_counter() - t
        t = time.perf_counter()
        it = pipeline.get_batches("flan2022_niv2", task_feature_lengths=FEATURE_LENGTHS,
                                  global_batch_size=args.batch_size, seed=args.seed)
        next(it)
        t_first, rss_first = time.perf_counter() - t, _rss_bytes()
        r = measure(it, args.scale_examples, 0, "scale", sample_rss=True)
    return {"task_files": n_files, "seqio_tasks": len(reg.task_names), "registration_s": t_reg,
            "first_batch_s": t_first, "rss_before_bytes": rss0, "rss_at_first_batch_bytes": rss_first,
            "examples": r["examples"], "wall_s": r["wall_s"], "examples_per_s": r["examples_per_s"],
            "peak_rss_sampled_bytes": r["peak_rss_sampled_bytes"],
            "packing_efficiency": r["packing_efficiency"],
            "note": "synthetic NIv2 files (real layout, random words): a scaling measurement, not NIv2 data"}


def _git_commit() -> str | None:
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(threads: int) -> dict:
    import importlib.metadata as md

    def ver(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu_model,
                    "logical_cpus": os.cpu_count(),
                    "cpus_available_to_process": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else None,
                    "note": "CPU shared with other jobs while measuring"},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "seqio": ver("seqio"),
                     "tensorflow-text": ver("tensorflow-text"), "sentencepiece": ver("sentencepiece"),
                     "numpy": np.__version__, "flan_mix": ver("flan_mix") or ver("flan-mix")},
        "threads": threads if threads > 0 else "tf default (AUTOTUNE)",
        "feature_lengths": FEATURE_LENGTHS,
        "load_average_at_start": list(os.getloadavg()),
        "git_commit": _git_commit(),
        "command": " ".join([sys.executable] + sys.argv), "argv": sys.argv,
    }


def _fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")


def print_table(results: dict) -> None:
    ours, peer, rss = results.get("ours"), results.get("seqio_peer"), results.get("rss")
    print()
    v = results.get("vocabulary")
    if v:
        print(f"vocabulary: {v['choice']} ({v['vocab_size']:,} ids, {v['model_type']})")
    print(f"{'figure':<36} {'ours (flan2022_cot)':>20} {'seqio peer':>12} {'ratio':>7} {'target':>10} {'met':>5}")
    rows = [
        ("examples/s (wall)", "examples_per_s", None, False),
        ("tokens/s (wall)", "tokens_per_s", None, False),
        ("cores busy (CPU s / wall s)", "cores_busy", None, False),
        ("examples/s per core", "examples_per_s_per_core", TARGETS["examples_per_s_per_core"], False),
        ("tokens/s per core", "tokens_per_s_per_core", None, False),
        ("examples per packed row", "examples_per_row", None, False),
    ]
    for label, key, target, pct in rows:
        o = ours.get(key) if ours else None
        p = peer.get(key) if peer else None
        ratio = f"{o / p:.2f}" if (o and p) else "-"
        met = "-" if target is None or o is None else ("yes" if o >= target else "NO")
        print(f"{label:<36} {_fmt(o, pct):>20} {_fmt(p, pct):>12} {ratio:>7} {_fmt(target):>10} {met:>5}")
    for feat in ("inputs", "targets"):
        o = ours["packing_efficiency"][feat] if ours else None
        p = peer["packing_efficiency"][feat] if peer else None
        t = TARGETS["packing_efficiency"]
        met = "-" if o is None else ("yes" if o >= t else "NO")
        ratio = f"{o / p:.2f}" if (o and p) else "-"
        print(f"{'packing efficiency ' + feat:<36} {_fmt(o, True):>20} {_fmt(p, True):>12} {ratio:>7} "
              f"{_fmt(t, True):>10} {met:>5}")
    if rss:
        gb = rss["peak_rss_bytes"] / 1e9
        print(f"{'peak RSS (GB = 1e9 B), ' + str(rss['examples']) + ' ex.':<36} {gb:>20.2f} {'-':>12} {'-':>7} "
              f"{TARGETS['peak_rss_gb']:>10.2f} {'yes' if gb < TARGETS['peak_rss_gb'] else 'NO':>5}")
        print(f"{'peak RSS (GiB)':<36} {rss['peak_rss_bytes'] / 2**30:>20.2f}")
        print(f"{'RSS after registration (GB)':<36} {results['rss_after_registration_bytes'] / 1e9:>20.2f}")
    sc = results.get("scale")
    if sc:
        print(f"scale (synthetic NIv2 files, {sc['seqio_tasks']:,} seqio tasks): first batch after "
              f"{sc['first_batch_s']:.1f} s at {sc['rss_at_first_batch_bytes'] / 1e9:.2f} GB RSS; "
              f"{sc['examples']:,} examples in {sc['wall_s']:.0f} s, peak sampled RSS "
              f"{sc['peak_rss_sampled_bytes'] / 1e9:.2f} GB")
    print(f"threads: {results['environment']['threads']}; per-core = per CPU-second of this process "
          "(user+sys, all threads).")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num_examples", type=int, default=20000, help="examples timed per throughput run")
    ap.add_argument("--rss_examples", type=int, default=100000, help="examples streamed for peak RSS (0: skip)")
    ap.add_argument("--batch_size", type=int, default=8, help="packed rows per batch")
    ap.add_argument("--warmup_examples", type=int, default=5000,
                    help="examples read (untimed) before timing starts, to drain the pipeline's buffers")
    ap.add_argument("--rss_max_s", type=float, default=0.0,
                    help="stop the RSS stream after this many seconds (0: no limit); the JSON says so")
    ap.add_argument("--threads", type=int, default=1, help="pin TF/tf.data to this many threads (0: TF default)")
    ap.add_argument("--max_open_rows", type=int, default=64,
                    help="first-fit packing: rows open at once (1 = next-fit, what seqio does)")
    ap.add_argument("--scale_examples", type=int, default=100000,
                    help="examples streamed from the full NIv2 submixture on synthetic files (0: skip)")
    ap.add_argument("--no_peer", action="store_true", help="skip the seqio peer")
    ap.add_argument("--vocab", default="generated",
                    help="generated (1,636 ids) | spm32k (32,100 ids, trained and cached on first use) | a "
                         "SentencePiece .model path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.num_examples < 20000:
        print(f"note: --num_examples={args.num_examples} is short; buffered examples inflate the rates (see --help)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    pin_threads(args.threads)

    from flan_mix.data.flan import flan_tasks

    results: dict = {"environment": environment(args.threads), "targets": TARGETS,
                     "args": vars(args)}
    vocabulary, results["vocabulary"] = load_vocabulary(args.vocab)
    v = results["vocabulary"]
    print(f"vocabulary {args.vocab}: {v['pieces']:,} {v['model_type']} pieces + {v['extra_ids']} sentinels = "
          f"{v['vocab_size']:,} ids, {v['file_bytes'] / 1e3:.0f} kB, md5 {v['md5']}, {v['path']} "
          f"({v['load_or_train_s']:.1f} s to load or train)")
    t = time.perf_counter()
    reg = register(vocabulary)
    cot_dir = reg.dirs.cot_dir
    if cot_dir is None or "flan2022_cot" not in reg.mixtures:
        raise SystemExit(f"No CoT data: expected the real TSVs in {flan_tasks.DEFAULT_COT_DIR} "
                         "(question \\t answer \\t rationale); nothing to benchmark.")
    files = sorted(f for f in os.listdir(cot_dir) if f.endswith("_train.tsv"))
    results["registration_s"] = time.perf_counter() - t
    results["rss_after_registration_bytes"] = _rss_bytes()
    results["data"] = {"cot_dir": str(cot_dir), "files": files, "dropped_tasks": sorted(reg.dropped),
                       "vocabulary": str(vocabulary), "vocab_size": vocabulary.vocab_size,
                       "mixture": "flan2022_cot", "seqio_tasks": len(reg.mixtures["flan2022_cot"])}
    print(f"registered flan2022_cot: {len(reg.mixtures['flan2022_cot'])} seqio tasks from {len(files)} TSVs "
          f"(dropped: {', '.join(sorted(reg.dropped)) or 'none'}); vocab size {vocabulary.vocab_size}")
    results["cot_sources"] = cs = cot_source_stats(vocabulary, cot_dir, files, sorted(reg.dropped))
    print(f"CoT sources: {len(cs['present'])} present ({cs['total_rows']:,} rows), absent: "
          f"{', '.join(cs['absent']) or 'none'}; peer-format tokens per example (with EOS): "
          f"inputs {cs['mean_input_tokens']:.1f}, targets {cs['mean_target_tokens']:.1f}")
    for name, st in cs["present"].items():
        print(f"  {name:<24} {st['rows']:>6,} rows  inputs {st['mean_input_tokens']:6.1f} (max {st['max_input_tokens']:>5})"
              f"  targets {st['mean_target_tokens']:6.1f} (max {st['max_target_tokens']:>4})  "
              f"{st['chars_per_token']:.2f} chars/token")

    print(f"ours: {args.num_examples} examples of flan2022_cot ...", flush=True)
    results["ours"] = measure(our_batches("flan2022_cot", args), args.num_examples, args.warmup_examples, "ours")

    if not args.no_peer:
        print(f"seqio peer: {args.num_examples} examples, same TSVs, no templates ...", flush=True)
        name = register_peer_task(vocabulary, cot_dir, files)
        ds = peer_dataset(name, args.batch_size, args.seed)
        results["seqio_peer"] = measure(_with_thread_options(ds, args.threads).as_numpy_iterator(), args.num_examples,
                                        args.warmup_examples, "seqio")

    results["rss_after_throughput_runs_bytes"] = _rss_bytes()
    if args.rss_examples > 0:
        mix = register_mixed_mixture()
        print(f"rss: streaming {args.rss_examples} examples of {MIXED_MIXTURE} (flan2022_cot + gen_train_mixture "
              "1:1) ...", flush=True)
        r = measure(our_batches(MIXED_MIXTURE, args), args.rss_examples, 0, "rss", sample_rss=True,
                    max_seconds=args.rss_max_s)
        results["rss"] = {"mixture": MIXED_MIXTURE, "components": mix, "examples": r["examples"],
                          "requested_examples": args.rss_examples, "stopped_early": r["stopped_early"],
                          "wall_s": r["wall_s"], "peak_rss_bytes": _peak_rss_bytes(), "peak_rss_sampled_bytes": r["peak_rss_sampled_bytes"],
                          "note": "peak_rss_bytes is ru_maxrss of the whole process (registration, vocabulary, the "
                                  "two throughput runs and this stream); peak_rss_sampled_bytes is the largest RSS "
                                  "seen between batches of this stream",
                          "examples_per_s": r["examples_per_s"], "packing_efficiency": r["packing_efficiency"]}

    if args.scale_examples > 0:
        print(f"scale: full NIv2 submixture on synthetic task files, {args.scale_examples} examples ...", flush=True)
        results["scale"] = measure_scale(args, vocabulary)

    results["verdict"] = {
        "examples_per_s_per_core": {"measured": results["ours"]["examples_per_s_per_core"],
                                    "target": TARGETS["examples_per_s_per_core"]},
        "packing_efficiency_inputs": {"measured": results["ours"]["packing_efficiency"]["inputs"],
                                      "target": TARGETS["packing_efficiency"]},
        "packing_efficiency_targets": {"measured": results["ours"]["packing_efficiency"]["targets"],
                                       "target": TARGETS["packing_efficiency"]},
    }
    if "rss" in results:
        results["verdict"]["peak_rss_gb"] = {"measured": results["rss"]["peak_rss_bytes"] / 1e9, "unit": "1e9 bytes",
                                             "target": TARGETS["peak_rss_gb"]}
    for v in results["verdict"].values():
        v["met"] = v["measured"] < v["target"] if v is results["verdict"].get("peak_rss_gb") \
            else v["measured"] >= v["target"]
    results["environment"]["load_average_at_end"] = list(os.getloadavg())
    print_table(results)
    print(f"load average (1, 5, 15 min): at start {results['environment']['load_average_at_start']}, at end "
          f"{results['environment']['load_average_at_end']}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2, default=str)
            f.write("\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()

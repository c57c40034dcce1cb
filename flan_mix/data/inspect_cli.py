"""`python run.py inspect`: the Flan 2022 submixture table, task lists, rendered examples, token stats, a plot.

  python run.py inspect                                   submixture table, then the registered names
  python run.py inspect --list=tasks [--csv=PATH]         every Flan 2022 task: submixture, category, ability,
                                                          count, cap, rate in its submixture and in flan2022_submix
  python run.py inspect --task=NAME --num_examples=3      render examples of one task x template type
                                                          (e.g. flan2022_cot_gsm8k_fs_opt)
  python run.py inspect --stats=NAME --num_examples=200   token-length statistics of a task or mixture
  python run.py inspect --plot=PATH.png                   mixture composition by submixture, category, ability
  --allow_missing_tasks=true                              drop tasks whose data is missing (logged) first
"""
from __future__ import annotations

import csv
import itertools
import sys
from collections import defaultdict

import numpy as np
import seqio

from flan_mix.data import pipeline, registration
from flan_mix.data.flan import catalog as catalog_lib
from flan_mix.data.flan import flan_tasks


def list_registry() -> None:
    mixtures = sorted(seqio.MixtureRegistry.names())
    tasks = sorted(seqio.TaskRegistry.names())
    print(f"{len(mixtures)} mixtures:")
    for name in mixtures:
        mix = seqio.MixtureRegistry.get(name)
        print(f"  {name}  ({len(mix.tasks)} tasks)")
    gen = [t for t in tasks if not t.startswith(flan_tasks.PREFIX)]
    print(f"{len(tasks)} tasks ({len(tasks) - len(gen)} Flan 2022 tasks: list them with --list=tasks); others:")
    for name in gen:
        task = seqio.TaskRegistry.get(name)
        print(f"  {name}  splits={list(task.splits)}")
    print("Render examples with: python run.py inspect --task=NAME --num_examples=3 [--split=train]")


def task_rows(reg: flan_tasks.Registration) -> list[dict]:
    """One row per registered catalog task: counts, caps, the share of input-inverted examples and effective
    rates."""
    submix = reg.mixtures.get(flan_tasks.SUBMIX_MIXTURE, {})
    rows = []
    for name, rec in reg.records.items():
        sub_rates = reg.submixture_rates[rec.submixture]
        types = flan_tasks.template_types_for(rec.submixture)
        in_sub = sum(sub_rates.get(flan_tasks.task_name(name, t), 0.0) for t in types)
        in_all = sum(submix.get(flan_tasks.task_name(name, t), 0.0) for t in types)
        rows.append({"task": name, "submixture": rec.submixture, "source": rec.source, "category": rec.category,
                     "ability": rec.ability, "template_family": rec.template_family, "loader": rec.loader.kind,
                     "example_count": rec.example_count, "cap": flan_tasks.CAPS[rec.submixture],
                     "capped_count": min(rec.example_count, flan_tasks.CAPS[rec.submixture]),
                     "template_types": ";".join(types),
                     "inversion_weight": reg.inversion_weights[flan_tasks.task_name(name, types[0])],
                     "rate_in_submixture": round(in_sub, 8), "rate_in_flan2022_submix": round(in_all, 8)})
    return rows


def submixture_table(reg: flan_tasks.Registration) -> str:
    cat = catalog_lib.load_catalog()
    rows = task_rows(reg)
    lines = [f"{'submixture':<10} {'tasks':>6} {'enabled':>7} {'registered':>10} {'seqio tasks':>11} {'cap':>8} "
             f"{'rate':>6} {'alt rate':>8}"]
    total = [0, 0, 0, 0]
    for sub in catalog_lib.SUBMIXTURES:
        listed = len(cat.by_submixture(sub))
        enabled = len(cat.by_submixture(sub, enabled_only=True))
        regd = sum(1 for r in rows if r["submixture"] == sub)
        seq = len(reg.submixture_rates.get(sub, {}))
        for i, v in enumerate((listed, enabled, regd, seq)):
            total[i] += v
        used = {s for s, r in reg.submixture_rates.items() if r}
        rate = flan_tasks.SUBMIX_RATES[sub] / sum(flan_tasks.SUBMIX_RATES[s] for s in used) if sub in used else 0
        alt = (flan_tasks.ALT_SUBMIX_RATES[sub] / sum(flan_tasks.ALT_SUBMIX_RATES[s] for s in used)
               if sub in used else 0)
        lines.append(f"{sub:<10} {listed:>6} {enabled:>7} {regd:>10} {seq:>11} {flan_tasks.CAPS[sub]:>8} "
                     f"{rate:>6.3f} {alt:>8.3f}")
    lines.append(f"{'total':<10} {total[0]:>6} {total[1]:>7} {total[2]:>10} {total[3]:>11} {'':>8} {1:>6.3f} "
                 f"{1:>8.3f}")
    paper = sum(v for k, v in cat.paper_counts().items() if k in catalog_lib.PAPER_GROUPS)
    lines.append(f"paper count (in_paper_count tasks): {paper} "
                 f"(paper: {catalog_lib.PAPER_TOTAL_TASKS})")
    if reg.dropped:
        lines.append(f"{len(reg.dropped)} task(s) dropped for missing data (allow_missing_tasks): "
                     + ", ".join(sorted(reg.dropped)[:8]) + (" ..." if len(reg.dropped) > 8 else ""))
    lines.append(f"mixtures: {flan_tasks.SUBMIX_MIXTURE} (rate), {flan_tasks.ALT_SUBMIX_MIXTURE} (alt rate), "
                 + ", ".join(flan_tasks.submixture_name(s) for s in catalog_lib.SUBMIXTURES))
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str) -> None:
    out = sys.stdout if path == "-" else open(path, "w", newline="")
    try:
        w = csv.DictWriter(out, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    finally:
        if out is not sys.stdout:
            out.close()
    if path != "-":
        print(f"wrote {len(rows)} rows to {path}")


def print_tasks(rows: list[dict]) -> None:
    print(f"{'task':<60} {'submix':<8} {'count':>8} {'capped':>7} {'rate(sub)':>10} {'rate(all)':>10}  ability")
    for r in sorted(rows, key=lambda r: (r["submixture"], -r["rate_in_flan2022_submix"], r["task"])):
        print(f"{r['task'][:60]:<60} {r['submixture']:<8} {r['example_count']:>8} {r['capped_count']:>7} "
              f"{r['rate_in_submixture']:>10.5f} {r['rate_in_flan2022_submix']:>10.6f}  {r['ability']}")


def token_stats(name: str, num_examples: int, seed: int = 0) -> dict:
    # The training stream (mixture rates, tasks opened lazily), untrimmed: no feature length binds.
    unbounded = {"inputs": 2**31 - 1, "targets": 2**31 - 1}
    stream = pipeline.token_stream(name, task_feature_lengths=unbounded, seed=seed, num_epochs=1)
    lens = {"inputs": [], "targets": []}
    for inputs, targets in itertools.islice(stream, num_examples):
        lens["inputs"].append(len(inputs))
        lens["targets"].append(len(targets))
    out = {}
    print(f"token lengths of {len(lens['inputs'])} examples of {name} (with EOS):")
    print(f"{'feature':<8} {'mean':>8} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}")
    for k, v in lens.items():
        a = np.array(v or [0])
        out[k] = {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
                  "p99": float(np.percentile(a, 99)), "max": int(a.max())}
        s = out[k]
        print(f"{k:<8} {s['mean']:>8.1f} {s['p50']:>6.0f} {s['p90']:>6.0f} {s['p99']:>6.0f} {s['max']:>6d}")
    return out


def plot_composition(rows: list[dict], path: str) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install matplotlib (or pip install -e .[plot])") from e
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    for ax, key, top in ((axes[0], "submixture", None), (axes[1], "category", 20), (axes[2], "ability", None)):
        agg = defaultdict(float)
        for r in rows:
            agg[r[key]] += r["rate_in_flan2022_submix"]
        items = sorted(agg.items(), key=lambda kv: -kv[1])
        if top and len(items) > top:
            items = items[:top] + [("(other)", sum(v for _, v in items[top:]))]
        ax.barh([k[:40] for k, _ in items][::-1], [v for _, v in items][::-1], color="tab:blue")
        ax.set_title(f"flan2022_submix rate by {key}")
        ax.set_xlabel("share of examples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def show_examples(name: str, split: str, num_examples: int) -> None:
    registration.check_name(name)
    if name in seqio.MixtureRegistry.names():
        raise ValueError(f"'{name}' is a mixture; inspect one of its tasks: "
                         + ", ".join(t.name for t in seqio.MixtureRegistry.get(name).tasks[:8]))
    examples = pipeline.get_eval_examples(name, split=split, max_examples=num_examples)
    for i, ex in enumerate(examples):
        print(f"===== {name} [{split}] #{i}  template={ex.get('template_id', '?')} "
              f"type={ex.get('template_type', '?')}  tokens: inputs={len(ex['inputs'])} "
              f"targets={len(ex['targets'])}")
        print(ex["inputs_pretokenized"])
        print("----- target:")
        print(ex["targets_pretokenized"])


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y")


def main(task: str | None = None, split: str = "train", num_examples: int = 3, list: str | None = None,
         csv: str | None = None, stats: str | None = None, plot: str | None = None,
         allow_missing_tasks: str | None = None) -> None:
    allow = None if allow_missing_tasks is None else _flag(allow_missing_tasks)
    vocabulary = registration.register_all()
    reg = flan_tasks.registered()
    if reg is None or (allow is not None and reg.allow_missing_tasks != allow):
        reg = flan_tasks.register_flan2022(vocabulary=vocabulary, allow_missing_tasks=allow)
    if task is not None:
        if split == "validation" and task.startswith(flan_tasks.PREFIX):
            split = "train"
        show_examples(task, split, num_examples)
        return
    rows = task_rows(reg)
    did = False
    if list is not None:
        if list not in ("tasks", "submixtures"):
            raise ValueError(f"--list={list}: choose tasks or submixtures")
        print(submixture_table(reg)) if list == "submixtures" else print_tasks(rows)
        did = True
    if csv is not None:
        write_csv(rows, csv)
        did = True
    if stats is not None:
        token_stats(stats, num_examples if num_examples > 3 else 200)
        did = True
    if plot is not None:
        plot_composition(rows, plot)
        did = True
    if not did:
        print(submixture_table(reg))
        print()
        list_registry()

"""DoIT-style ability growth (arXiv 2310.19651): how each ability's score grows with its data volume, per model size.

`python run.py curate doit --output_dir=D [--gin.doit_sweep.volumes=[1,4,16,64,256] ...]`

For every (model size, volume N) cell: a training set of N examples of each ability, drawn from a mixture whose
tasks carry ability labels; a fresh model trained on it with the ordinary trainer (loop.train under the size's
gin bindings); the eval tasks scored by the ordinary evaluator (evaluate_generation), grouped by ability.

Layout of D:
  data/volume_<N>.jsonl        the cell's training set (ability, task, inputs, targets), for inspection
  cells/<size>_<N>/            MODEL_DIR of the cell: checkpoints, metrics.jsonl, eval_results.{json,md},
                               result.json (written last: its presence means the cell is done)
  growth.csv                   size, volume, ability, score, random
  growth.png                   one panel per ability: score vs volume (log x), one line per size, random dotted

Scores. A multiple-choice eval task is scored by rank classification (model_rank) against the chance of
picking an option at random (chance); a free-form task by exact match (model_em) against always giving the
split's most frequent answer (majority_em). An ability's score and random line are the means over its tasks.

Other data. Any mixture whose tasks have ability labels works: set doit_sweep.source to it (e.g. a Flan 2022
submixture registered with register_all.collections = ['generated', 'flan2022'], whose tasks carry the catalog's
DoIT ability label, e.g. 'CoT math') and doit_sweep.eval_tasks to the eval task names (mixture names allowed).

A killed sweep resumes: finished cells are skipped, and an unfinished cell resumes from its last checkpoint.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
from typing import Mapping, Sequence

import gin
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("size", "volume", "ability", "score", "random")
# The CPU default: a tiny T5 (gin/models/t5_1_1_tiny.gin) and a smaller one, so two lines per panel.
DEFAULT_SIZES = {
    "t5-mini": ["T5Config.emb_dim = 64", "T5Config.num_heads = 2", "T5Config.head_dim = 32",
                "T5Config.mlp_dim = 256", "T5Config.num_encoder_layers = 1", "T5Config.num_decoder_layers = 1"],
    "t5-tiny": ["gin/models/t5_1_1_tiny.gin"],
}


@gin.configurable
def doit_sweep(volumes: Sequence[int] = (1, 4, 16, 64, 256),
               sizes: Mapping[str, str | Sequence[str]] | None = None,
               train_steps: int = 300,
               seed: int = 0,
               source: str = "gen_train_mixture",
               abilities: Sequence[str] | None = None,
               eval_tasks: Sequence[str] | None = None) -> dict:
    """The sweep's settings (gin: doit_sweep.*).

    volumes: examples per ability in a cell's training set.
    sizes: name -> a gin file, or a list of gin files and bindings, that sets the model (applied on top of the
      run's gin for that size's cells only). Names become directory names: letters, digits, '-' and '.'.
    train_steps: steps of every cell (TRAIN_STEPS of the cell's run).
    seed: the training seed of every cell and the order in which an ability's tasks share its examples.
    source: the task or mixture the training examples come from (train split); its tasks need ability labels.
    abilities: the abilities to sweep (default: all of the source's).
    eval_tasks: eval task or mixture names (default: the generated eval tasks of the swept abilities).
    """
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    vols = sorted({int(v) for v in volumes})
    if not vols or vols[0] < 1:
        raise ValueError(f"doit_sweep.volumes={list(volumes)}: give one or more positive integers "
                         "(examples per ability), e.g. [1, 4, 16, 64, 256].")
    if not sizes:
        raise ValueError("doit_sweep.sizes is empty: give {name: 'gin/models/X.gin' or [bindings]}.")
    for name in sizes:
        if not name or any(not (c.isalnum() or c in "-.") for c in name):
            raise ValueError(f"doit_sweep.sizes: name {name!r} is used as a directory name; use letters, "
                             "digits, '-' and '.' only.")
    if int(train_steps) < 1:
        raise ValueError(f"doit_sweep.train_steps={train_steps}: must be >= 1.")
    return {"volumes": vols, "sizes": sizes, "train_steps": int(train_steps), "seed": int(seed),
            "source": source, "abilities": list(abilities) if abilities else None,
            "eval_tasks": list(eval_tasks) if eval_tasks else None}


def cell_name(size: str, volume: int) -> str:
    return f"{size}_{volume}"


def _ability_specs(source: str, abilities: Sequence[str] | None) -> dict[str, list[str]]:
    """ability -> the source's task names with that label (sorted), restricted to `abilities`."""
    from flan_mix.data import registration
    specs = registration.eval_tasks([source])
    unlabeled = [s["name"] for s in specs if not s["ability"]]
    if unlabeled:
        raise ValueError(f"doit_sweep.source='{source}': {len(unlabeled)} task(s) have no ability label (e.g. "
                         f"{', '.join(unlabeled[:3])}); DoIT groups by ability, so use a mixture whose tasks all "
                         "carry one (the generated collection's, or a Flan 2022 submixture).")
    by_ability: dict[str, list[str]] = {}
    for s in specs:
        by_ability.setdefault(s["ability"], []).append(s["name"])
    if abilities:
        missing = sorted(set(abilities) - set(by_ability))
        if missing:
            raise ValueError(f"doit_sweep.abilities: {missing} not in '{source}' (it has {sorted(by_ability)}).")
        by_ability = {a: by_ability[a] for a in abilities}
    return dict(sorted(by_ability.items()))


def ability_pools(source: str, abilities: Sequence[str] | None, max_volume: int, seed: int) -> dict[str, list[dict]]:
    """ability -> max_volume examples {ability, task, inputs, targets}, the ability's tasks taking turns.

    Each task gives its first examples in its own (seeded) train order and the tasks take turns in a seeded
    order, so the first N of a pool are also the first N of a bigger pool: a larger volume adds examples to a
    smaller one instead of drawing a new set, as in DoIT's growing data volumes.
    """
    from flan_mix.data import pipeline
    pools = {}
    for ability, tasks in _ability_specs(source, abilities).items():
        tasks = list(tasks)
        random.Random(f"doit|{seed}|{ability}").shuffle(tasks)
        per_task = math.ceil(max_volume / len(tasks))
        columns = [pipeline.get_eval_examples(t, split="train", max_examples=per_task) for t in tasks]
        pool = []
        for i in range(per_task):
            pool += [{"ability": ability, "task": t, "inputs": col[i]["inputs_pretokenized"],
                      "targets": col[i]["targets_pretokenized"]} for t, col in zip(tasks, columns) if i < len(col)]
        if len(pool) < max_volume:
            raise ValueError(f"ability '{ability}' has {len(pool)} training examples in '{source}' "
                             f"({', '.join(tasks)}), fewer than the largest volume {max_volume}; lower "
                             "doit_sweep.volumes or register more (register_generated_tasks.num_train).")
        pools[ability] = pool[:max_volume]
    return pools


def ability_scores(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Per ability, from evaluate_generation's rows: score and random (means over its tasks) and the tasks."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["task"].startswith("MEAN"):
            continue
        mc = r.get("chance") is not None
        score, rand = (r["model_rank"], r["chance"]) if mc else (r["model_em"], r["majority_em"])
        out.setdefault(r["ability"], {"tasks": []})["tasks"].append(
            {"task": r["task"], "score": score, "random": rand, "metric": "model_rank" if mc else "model_em"})
    for entry in out.values():
        entry["score"] = sum(t["score"] for t in entry["tasks"]) / len(entry["tasks"])
        entry["random"] = sum(t["random"] for t in entry["tasks"]) / len(entry["tasks"])
    return dict(sorted(out.items()))


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)  # atomic: a kill leaves no half-written result that would count as done


def run_cell(output_dir: str, size: str, size_entries, volume: int, pools: Mapping[str, list[dict]],
             settings: Mapping, vocabulary) -> dict:
    """Trains and evaluates one cell; returns (and writes) its result."""
    from flan_mix.data import records_task, registration
    from flan_mix.evaluation import generation
    from flan_mix.runtime.run_config import run_config
    from flan_mix.train.overrides import gin_overrides
    from flan_mix.train import loop
    examples = [ex for ability in pools for ex in pools[ability][:volume]]
    data_path = os.path.join(output_dir, "data", f"volume_{volume}.jsonl")
    if not os.path.exists(data_path):
        os.makedirs(os.path.dirname(data_path), exist_ok=True)
        with open(f"{data_path}.tmp", "w") as f:
            f.writelines(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples)
        os.replace(f"{data_path}.tmp", data_path)
    task = records_task.register_records_task(f"doit_volume_{volume}", {"train": examples}, vocabulary)
    cell_dir = os.path.join(output_dir, "cells", cell_name(size, volume))
    bindings = [f"run_config.model_dir = {cell_dir!r}", f"run_config.mixture_or_task_name = {task!r}",
                f"run_config.train_steps = {settings['train_steps']}", f"run_config.seed = {settings['seed']}"]
    entries = [size_entries] if isinstance(size_entries, str) else list(size_entries)
    with gin_overrides(entries, bindings):
        result = loop.train()
        run = run_config()
        specs = registration.eval_tasks(settings["eval_tasks"])
        names = [s["name"] for s in specs if s["ability"] in pools]
        if not names:
            raise ValueError(f"no eval task has one of the swept abilities {sorted(pools)}; set "
                             "doit_sweep.eval_tasks to tasks labeled with them.")
        rows = generation.evaluate_generation(result.model, result.params, mesh=result.mesh,
                                              vocabulary=result.vocabulary, out_dir=cell_dir,
                                              task_feature_lengths=run.task_feature_lengths, tasks=names)
    out = {"size": size, "volume": volume, "train_steps": settings["train_steps"], "seed": settings["seed"],
           "train_task": task, "train_examples": len(examples), "abilities": ability_scores(rows)}
    _write_json(os.path.join(cell_dir, "result.json"), out)
    return out


def write_csv(path: str, results: Sequence[Mapping]) -> list[dict]:
    rows = [{"size": r["size"], "volume": r["volume"], "ability": ability, "score": entry["score"],
             "random": entry["random"]} for r in results for ability, entry in r["abilities"].items()]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def plot_growth(rows: Sequence[Mapping], path: str, sizes: Sequence[str]):
    """growth.png: a panel per ability; returns the matplotlib Figure (its axes are the panels)."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on the training machines
    import matplotlib.pyplot as plt
    abilities = sorted({r["ability"] for r in rows})
    ncols = min(4, len(abilities))
    nrows = math.ceil(len(abilities) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    flat = axes.ravel()
    for ax in flat[len(abilities):]:
        fig.delaxes(ax)  # a panel per ability, no empty ones
    for ax, ability in zip(flat, abilities):
        mine = [r for r in rows if r["ability"] == ability]
        for size in sizes:
            pts = sorted((r["volume"], r["score"]) for r in mine if r["size"] == size)
            if pts:
                ax.plot([v for v, _ in pts], [s for _, s in pts], marker="o", label=size)
        # chance/majority depend on the eval data only, so they are the same in every cell
        ax.axhline(sum(r["random"] for r in mine) / len(mine), linestyle=":", color="gray", label="random")
        ax.set_xscale("log")
        ax.set_title(ability)
        ax.set_xlabel("examples per ability")
        ax.set_ylabel("score (%)")
        ax.set_ylim(-2, 102)
    flat[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig


def run_sweep(output_dir: str, settings: Mapping | None = None) -> list[dict]:
    """Every cell (skipping finished ones), then growth.csv and growth.png. Returns the CSV rows."""
    from flan_mix.data import registration
    settings = settings or doit_sweep()
    cells = [(size, v) for size in settings["sizes"] for v in settings["volumes"]]
    result_path = lambda size, v: os.path.join(output_dir, "cells", cell_name(size, v), "result.json")
    todo = [c for c in cells if not os.path.exists(result_path(*c))]
    print(f"DoIT sweep: {len(cells)} cells ({len(settings['sizes'])} sizes x {len(settings['volumes'])} volumes), "
          f"{len(cells) - len(todo)} already done; output in {output_dir}")
    if todo:
        vocabulary = registration.register_all()
        pools = ability_pools(settings["source"], settings["abilities"], max(settings["volumes"]), settings["seed"])
        bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="doit cells", unit="cell")
        for size, volume in todo:
            bar.set_postfix(cell=cell_name(size, volume))
            run_cell(output_dir, size, settings["sizes"][size], volume, pools, settings, vocabulary)
            bar.update(1)
        bar.close()
    results = []
    for size, volume in cells:
        with open(result_path(size, volume)) as f:
            results.append(json.load(f))
    rows = write_csv(os.path.join(output_dir, "growth.csv"), results)
    plot_growth(rows, os.path.join(output_dir, "growth.png"), list(settings["sizes"]))
    print(f"wrote {os.path.join(output_dir, 'growth.csv')} ({len(rows)} rows) and "
          f"{os.path.join(output_dir, 'growth.png')}")
    return rows


def doit_command(output_dir: str | None = None) -> list[dict]:
    """`python run.py curate doit --output_dir=D` (the sweep's settings are gin: doit_sweep.*)."""
    if not output_dir:
        raise ValueError("curate doit needs --output_dir=D (where cells/, growth.csv and growth.png go).")
    rows = run_sweep(output_dir)
    from flan_mix.evaluation import report
    print(report.text_table(rows, CSV_COLUMNS))
    return rows

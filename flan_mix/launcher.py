"""The commands behind run.py (and the installed `flan-mix` script).

  python run.py                      train on the embedded default (gin/runs/default.gin), then evaluate
  python run.py train   [flags]      train (resumes from MODEL_DIR), then evaluate unless
                                     --gin.train_command.evaluate_after=False
  python run.py eval    [flags]      evaluate the latest checkpoint in MODEL_DIR on the eval tasks
  python run.py eval --benchmarks=bbh,mmlu [--mode=direct|cot] [--mmlu_scoring=rank|generate]
        [--split=val|test] [--max_examples=N] [--self_consistency=K --temperature=T] [--bbh_dir=DIR]
        [--mmlu_dir=DIR] [flags]
  python run.py eval prompts --benchmark=bbh|mmlu --task=T --output=F.jsonl [--mode=..] [--split=..]
  python run.py eval score --benchmark=bbh|mmlu --predictions=FILE|DIR [--mode=cot|direct] [--output_dir=D]
  python run.py infer   --task=NAME [--output=FILE] [--split=S] [flags]   decode a task to JSONL
  python run.py inspect [--task=NAME --num_examples=N --split=S] [flags]   list or render tasks
        [--list=tasks|submixtures --csv=PATH --stats=NAME --plot=PATH.png --allow_missing_tasks=true]
  python run.py convert --from_hf=DIR --model_dir=OUT     HF T5 checkpoint -> flan_mix checkpoint
  python run.py convert --to_hf=OUT [--model_dir=DIR]     flan_mix checkpoint -> HF T5 checkpoint
  python run.py curate STAGE [flags]   data curation: export | ifd | reflect | tapir | doit
                                       (flan_mix/curation/cli.py lists each stage's flags)
  python run.py serve [--host=127.0.0.1 --port=8000] [flags]   MODEL_DIR's checkpoint behind an
                                       OpenAI-compatible /v1/chat/completions (loopback by default)

Multi-process (train, eval), t5x style; every process gets the same address and N:
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                            process I of N; process 0 serves the coordinator on HOST:PORT
  --distributed=auto|off    without those flags, auto (the default) starts jax.distributed when
                            SLURM (srun, >1 task), Open MPI (mpirun) or a Cloud TPU VM is detected;
                            off never does. Timeouts: --gin.distributed_timeouts.initialization_timeout=S
                            and .heartbeat_timeout=S (flan_mix/runtime/distributed.py)

Flags, t5x style:
  --gin_file=PATH           (repeatable; default gin/runs/default.gin; looked up in ., then in the
                            installed package's gin/ and configs/)
  --gin.NAME=VALUE          a gin binding or macro, e.g. --gin.TRAIN_STEPS=100 --gin.MODEL_DIR="'/tmp/x'"
The effective configuration is written to MODEL_DIR/config.gin.

Errors of use exit 2 with the message alone; data errors print their type and message and exit 1.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF is only the data reader here; keep it quiet

import gin  # noqa: E402

from flan_mix.curation import cli as curation_cli  # noqa: E402
from flan_mix.resources import resource_root  # noqa: E402

DEFAULT_GIN = "gin/runs/default.gin"
_BENCHMARK_DIRS = {"bbh_dir": None, "mmlu_dir": None}
# Multi-process runs (flan_mix/runtime/distributed.py); "auto" starts jax.distributed by itself
# on a detected SLURM, Open MPI or TPU-pod environment and does nothing on one machine.
_DISTRIBUTED = {"coordinator_address": None, "num_processes": None, "process_id": None, "distributed": "auto"}
DISTRIBUTED_COMMANDS = ("train", "eval")
COMMAND_OPTIONS = {
    "train": dict(_DISTRIBUTED),
    "eval": {**_DISTRIBUTED, "benchmarks": None, "mode": None, "mmlu_scoring": None, "split": None, "max_examples": None,
             "self_consistency": None, "temperature": None, **_BENCHMARK_DIRS},
    "eval prompts": {"benchmark": None, "task": None, "mode": "direct", "split": "test", "output": None,
                     **_BENCHMARK_DIRS},
    "eval score": {"benchmark": None, "predictions": None, "mode": None, "output_dir": None},
    "infer": {"task": None, "output": None, "split": "validation"},
    "inspect": {"task": None, "split": "train", "num_examples": "3", "list": None, "csv": None,
                "stats": None, "plot": None, "allow_missing_tasks": None},
    "convert": {"from_hf": None, "to_hf": None, "model_dir": None},
    **{f"curate {stage}": dict(options) for stage, (_, _, options) in curation_cli.STAGES.items()},
    "serve": dict(curation_cli.SERVE_OPTIONS),
}
COMMANDS = tuple(COMMAND_OPTIONS)


class UsageError(ValueError):
    pass


def parse_args(argv: list[str]) -> tuple[str, list[str], list[str], dict[str, str]]:
    """-> (command, gin files, gin bindings, other --key=value options)."""
    command = "train"
    if argv and not argv[0].startswith("-"):
        command = argv.pop(0)
        if command == "eval" and argv and argv[0] in ("prompts", "score"):
            command = f"eval {argv.pop(0)}"
        elif command == "curate":
            stage = argv.pop(0) if argv and not argv[0].startswith("-") else None
            if stage not in curation_cli.STAGES:
                raise UsageError(f"curate needs a stage: {' | '.join(curation_cli.STAGES)} (got {stage!r}).")
            command = f"curate {stage}"
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}.")
    gin_files, bindings, options = [], [], {}
    it = iter(argv)
    for arg in it:
        if not arg.startswith("--"):
            raise UsageError(f"unexpected argument {arg!r}; flags look like --gin.NAME=VALUE.")
        key, eq, value = arg[2:].partition("=")
        if not eq:  # "--flag value" form
            value = next(it, None)
            if value is None:
                raise UsageError(f"flag --{key} needs a value.")
        if key == "gin_file":
            gin_files.append(value)
        elif key.startswith("gin."):
            bindings.append(f"{key[4:]} = {value}")
        else:
            options[key] = value
    return command, gin_files or [DEFAULT_GIN], bindings, options


def _quiet_gin_path_probe(record) -> bool:
    """gin looks for every file in the working directory first and logs an ERROR when it is not
    there, before finding it in the search path (the installed package); that probe is not an error."""
    return not (record.getMessage().startswith("Path not found:")
                and record.pathname.endswith(os.path.join("gin", "resource_reader.py")))


def parse_gin(gin_files: list[str], bindings: list[str]):
    import flan_mix.configurables  # noqa: F401  (registers every configurable before parsing)
    root = str(resource_root())
    gin.add_config_file_search_path(root)
    logging.getLogger().addFilter(_quiet_gin_path_probe)  # gin logs through the root logger
    for path in gin_files:
        if not os.path.exists(path) and not os.path.exists(os.path.join(root, path)):
            raise UsageError(f"--gin_file={path}: no such file (looked in . and {root}).")
    try:
        gin.parse_config_files_and_bindings(gin_files, bindings, finalize_config=False)
    except (ValueError, KeyError, SyntaxError) as e:  # gin reports unknown names/params this way
        raise UsageError(f"bad gin configuration: {e}\nCheck the spelling against the gin files "
                         f"under {root}/gin and the @gin.configurable functions in flan_mix.") from e


@gin.configurable
def train_command(evaluate_after: bool = True, evaluate_every_steps: int = 0,
                  periodic_benchmarks: Sequence[str] = (), periodic_benchmark_examples: int = 10):
    """Train, then (by default) evaluate the trained params in memory.

    evaluate_every_steps > 0 also evaluates during training: the eval tasks of evaluate_generation
    (held-in validation splits and held-out tasks) and, when periodic_benchmarks names some
    (e.g. ['bbh', 'mmlu']), their first periodic_benchmark_examples questions per task or subject.
    Tables go to MODEL_DIR/eval/step_N/; the means go to TensorBoard and metrics.jsonl as
    eval/<group>/<column> and eval/<benchmark>/{accuracy,normalized}.
    """
    from flan_mix.evaluation import benchmarks, generation
    from flan_mix.infer.loading import LoadedModel
    from flan_mix.runtime.run_config import run_config
    from flan_mix.train import loop
    run = run_config()
    if periodic_benchmarks:
        _check_choices({"benchmarks": ",".join(periodic_benchmarks)})

    def evaluate(result) -> dict[str, float]:
        out_dir = os.path.join(run.model_dir, "eval", f"step_{result.final_step}")
        rows = generation.evaluate_generation(
            result.model, result.params, mesh=result.mesh, vocabulary=result.vocabulary, out_dir=out_dir,
            task_feature_lengths=run.task_feature_lengths)
        figures = {f"{r['group']}/{col}": r[col] for r in rows if r["task"].startswith("MEAN")
                   for col in generation.SCORE_COLUMNS if r.get(col) is not None}
        if periodic_benchmarks:
            loaded = LoadedModel(model=result.model, params=result.params, mesh=result.mesh,
                                 vocabulary=result.vocabulary)
            tables = benchmarks.evaluate_benchmarks(loaded, periodic_benchmarks, out_dir=out_dir,
                                                    lengths=run.task_feature_lengths,
                                                    max_examples=periodic_benchmark_examples)
            for row in tables["summary"]:
                name = re.sub(r"\W+", "_", row["benchmark"]).strip("_")
                figures.update({f"{name}/{col}": row[col] for col in ("accuracy", "normalized") if col in row})
        return figures

    result = loop.train(periodic=evaluate if evaluate_every_steps else None,
                        periodic_every_steps=evaluate_every_steps)
    if evaluate_after:
        generation.evaluate_generation(result.model, result.params, mesh=result.mesh,
                                       vocabulary=result.vocabulary, out_dir=run.model_dir,
                                       task_feature_lengths=run.task_feature_lengths)
    return result


def convert_command(from_hf: str | None, to_hf: str | None, model_dir: str | None):
    """HF transformers T5 checkpoints (config.json + safetensors) in and out of MODEL_DIR."""
    from flan_mix.models import convert
    from flan_mix.runtime import checkpoints
    if bool(from_hf) == bool(to_hf):
        raise UsageError("convert needs exactly one of --from_hf=HF_DIR (with --model_dir=OUT) or "
                         "--to_hf=OUT_DIR (with --model_dir=DIR or --gin.MODEL_DIR).")
    if from_hf:
        if not model_dir:
            raise UsageError("convert --from_hf needs --model_dir=OUT (where the flan_mix checkpoint goes).")
        if os.path.isdir(os.path.join(model_dir, "checkpoints")):
            raise UsageError(f"--model_dir={model_dir} already holds checkpoints; import into a fresh directory.")
        config, params = convert.load_hf_checkpoint(from_hf)
        step_dir = checkpoints.save_params(model_dir, params)
        gin_path = os.path.join(model_dir, "model.gin")
        with open(gin_path, "w") as f:
            f.write(convert.gin_bindings(config, source=from_hf))
        from flan_mix.data import hf_vocab
        from flan_mix.infer.loading import TOKENIZER_SUBDIR
        tokenizer_dir = os.path.join(model_dir, TOKENIZER_SUBDIR)
        copied = hf_vocab.copy_tokenizer_files(from_hf, tokenizer_dir)
        print(f"wrote {step_dir} and {gin_path} (the model's {type(config).__name__} bindings).")
        if copied:
            print(f"copied its tokenizer ({', '.join(copied)}) to {tokenizer_dir}: eval and infer on "
                  f"{model_dir} tokenize with it; to fine-tune, add --gin.register_all.tokenizer_dir=\"'{tokenizer_dir}'\".")
        else:
            print(f"{from_hf} has no tokenizer files (tokenizer.json, spiece.model or tokenizer.model): the model "
                  "will read text through the shared SentencePiece vocabulary unless you bind "
                  "register_all.tokenizer_dir to the directory its tokenizer was saved to.")
        print(f"Evaluate it: python run.py eval --gin_file=gin/runs/default.gin --gin_file={gin_path} --gin.MODEL_DIR=\"'{model_dir}'\" "
              f"[--benchmarks=bbh,mmlu]. Fine-tune from it: --gin_file=gin/runs/finetune.gin --gin_file={gin_path} "
              f"--gin.INITIAL_CHECKPOINT_PATH=\"'{step_dir}'\".")
        return step_dir
    import jax
    from flan_mix.infer.loading import load_model
    from flan_mix.runtime.run_config import run_config
    if model_dir:
        gin.bind_parameter("run_config.model_dir", model_dir)
    loaded = load_model(run_config().model_dir)
    written = convert.save_hf_checkpoint(jax.device_get(loaded.params), loaded.model.config, to_hf)
    print("wrote " + ", ".join(written))
    return to_hf


def _require(opts: dict, command: str, *names: str) -> None:
    missing = [f"--{n}" for n in names if not opts.get(n)]
    if missing:
        raise UsageError(f"{command} needs {', '.join(missing)} (the launcher's docstring lists the commands).")


def _check_choices(opts: dict) -> None:
    """The benchmark flags' values, checked before anything is loaded."""
    from flan_mix.evaluation import answers, benchmarks, mmlu
    choices = {"benchmark": benchmarks.BENCHMARKS, "mode": answers.MODES, "mmlu_scoring": benchmarks.MMLU_SCORINGS,
               "split": mmlu.SPLITS}
    for name, allowed in choices.items():
        if opts.get(name) and opts[name] not in allowed:
            raise UsageError(f"--{name}={opts[name]}: choose one of {', '.join(allowed)}.")
    for name in (opts.get("benchmarks") or "").split(","):
        if name.strip() and name.strip() not in benchmarks.BENCHMARKS:
            raise UsageError(f"--benchmarks: unknown {name.strip()!r}; choose from {', '.join(benchmarks.BENCHMARKS)}.")


def _number(opts: dict, name: str, kind: type):
    try:
        value = kind(opts[name])
    except ValueError:
        raise UsageError(f"--{name}={opts[name]}: expected {'an integer' if kind is int else 'a number'}.") from None
    if value <= 0:
        raise UsageError(f"--{name}={opts[name]}: must be positive.")
    return value


def eval_command(opts: dict) -> None:
    """The eval tasks' table (exact match and rank classification), or with --benchmarks=bbh,mmlu the
    benchmarks; either way on MODEL_DIR's checkpoint (trained, or imported with convert)."""
    from flan_mix.evaluation import benchmarks, generation
    if not opts["benchmarks"]:
        generation.evaluate()
        return
    overrides = {k: opts[k] for k in ("mode", "mmlu_scoring", "split", "bbh_dir", "mmlu_dir") if opts[k]}
    for name, kind in (("max_examples", int), ("self_consistency", int), ("temperature", float)):
        if opts[name]:
            overrides[name] = _number(opts, name, kind)
    if overrides.get("self_consistency", 1) > 1 and opts["mode"] != "cot":
        raise UsageError("--self_consistency=K votes over K sampled chains of thought: add --mode=cot.")
    benchmarks.run_benchmarks([b.strip() for b in opts["benchmarks"].split(",")], **overrides)


def start_distributed(opts: dict) -> bool:
    """jax.distributed from --coordinator_address/--num_processes/--process_id or the cluster."""
    from flan_mix.runtime import distributed
    try:
        return distributed.initialize_from_flags(opts)
    except ValueError as e:  # a flag (or timeout binding) to fix
        raise UsageError(str(e)) from e


def main(argv: list[str]) -> int:
    from flan_mix.data.data_errors import DataError
    command, gin_files, bindings, options = parse_args(list(argv))
    allowed = COMMAND_OPTIONS[command]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(f"unknown flags for {command!r}: {', '.join('--' + k for k in unknown)}; "
                         f"it takes {', '.join('--' + k for k in allowed) or 'only --gin_file and --gin.*'}.")
    opts = {**allowed, **options}
    if command == "infer" and not opts["task"]:
        raise UsageError("infer needs --task=NAME (list tasks with: python run.py inspect).")
    if command.startswith("eval"):
        _check_choices(opts)
    if command == "eval prompts":
        _require(opts, command, "benchmark", "task", "output")
    if command == "eval score":
        _require(opts, command, "benchmark", "predictions")
    parse_gin(gin_files, bindings)
    if command in DISTRIBUTED_COMMANDS:
        start_distributed(opts)  # before anything touches a JAX device
    if command == "train":
        train_command()
    elif command == "eval":
        eval_command(opts)
    elif command == "eval prompts":
        from flan_mix.evaluation import benchmarks
        n = benchmarks.write_prompts(opts["benchmark"], opts["task"], opts["output"], mode=opts["mode"],
                                     split=opts["split"], bbh_dir=opts["bbh_dir"], mmlu_dir=opts["mmlu_dir"])
        print(f"wrote {n} prompts to {opts['output']}")
    elif command == "eval score":
        from flan_mix.evaluation import benchmarks
        benchmarks.score_file(opts["benchmark"], opts["predictions"], mode=opts["mode"], out_dir=opts["output_dir"])
    elif command == "infer":
        from flan_mix.infer import infer_task
        infer_task.infer(task=opts["task"], output=opts["output"], split=opts["split"])
    elif command == "inspect":
        from flan_mix.data import inspect_cli
        inspect_cli.main(task=opts["task"], split=opts["split"], num_examples=int(opts["num_examples"]),
                         list=opts["list"], csv=opts["csv"], stats=opts["stats"], plot=opts["plot"],
                         allow_missing_tasks=opts["allow_missing_tasks"])
    elif command == "convert":
        convert_command(opts["from_hf"], opts["to_hf"], opts["model_dir"])
    elif command.startswith("curate "):
        import importlib
        module, function, _ = curation_cli.STAGES[command.split(" ", 1)[1]]
        try:
            getattr(importlib.import_module(module), function)(**opts)
        except ValueError as e:
            if isinstance(e, DataError):
                raise
            raise UsageError(str(e)) from e
    elif command == "serve":
        from flan_mix.infer import serve
        try:
            serve.serve_command(**opts)
        except ValueError as e:  # a bad --host/--port or binding: a usage error, as for curate
            if isinstance(e, DataError):
                raise
            raise UsageError(str(e)) from e
    return 0


def run(argv: list[str]) -> int:
    """main() with errors turned into messages: usage errors exit 2; data and checkpoint errors and
    a non-finite loss, and a jax.distributed that cannot start, print their type and message and exit 1.
    Anything else is a bug and keeps its traceback."""
    from flan_mix.data.data_errors import DataError
    from flan_mix.models.convert import CheckpointError
    from flan_mix.runtime.checkpoints import CheckpointMismatchError, MissingCheckpointError
    from flan_mix.runtime.distributed import DistributedSetupError
    from flan_mix.train.resilience import NonFiniteError
    try:
        return main(argv)
    except UsageError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    except (DataError, CheckpointError, CheckpointMismatchError, MissingCheckpointError, NonFiniteError,
            DistributedSetupError) as e:
        print(f"run.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def console_main() -> None:
    """The installed `flan-mix` script: the same as python run.py."""
    sys.exit(run(sys.argv[1:]))

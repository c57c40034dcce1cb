#!/usr/bin/env python
"""The one launcher of flan_mix.

  python run.py                      train on the embedded default (gin/runs/default.gin), then evaluate
  python run.py train   [flags]      train (resumes from MODEL_DIR)
  python run.py eval    [flags]      evaluate the latest checkpoint in MODEL_DIR
  python run.py infer   --task=NAME [--output=FILE] [flags]   decode a task's validation split to JSONL
  python run.py inspect [--task=NAME --num_examples=N --split=S] [flags]   list or render tasks
        [--list=tasks|submixtures --csv=PATH --stats=NAME --plot=PATH.png --allow_missing_tasks=true]

Flags, t5x style:
  --gin_file=PATH           (repeatable; default gin/runs/default.gin)
  --gin.NAME=VALUE          a gin binding or macro, e.g. --gin.TRAIN_STEPS=100 --gin.MODEL_DIR="'/tmp/x'"
The effective configuration is written to MODEL_DIR/config.gin.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF is only the data reader here; keep it quiet

REPO = os.path.dirname(os.path.abspath(__file__))
COMMANDS = ("train", "eval", "infer", "inspect")
DEFAULT_GIN = "gin/runs/default.gin"


class UsageError(ValueError):
    pass


def parse_args(argv: list[str]) -> tuple[str, list[str], list[str], dict[str, str]]:
    """-> (command, gin files, gin bindings, other --key=value options)."""
    command = "train"
    if argv and not argv[0].startswith("-"):
        command = argv.pop(0)
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


def parse_gin(gin_files: list[str], bindings: list[str]):
    import gin
    import flan_mix.configurables  # noqa: F401  (registers every configurable before parsing)
    gin.add_config_file_search_path(REPO)
    for path in gin_files:
        if not os.path.exists(path) and not os.path.exists(os.path.join(REPO, path)):
            raise UsageError(f"--gin_file={path}: no such file (looked in . and {REPO}).")
    try:
        gin.parse_config_files_and_bindings(gin_files, bindings, finalize_config=False)
    except (ValueError, KeyError, SyntaxError) as e:  # gin reports unknown names/params this way
        raise UsageError(f"bad gin configuration: {e}\nCheck the spelling against the gin files "
                         f"under {REPO}/gin and the @gin.configurable functions in flan_mix.") from e


COMMAND_OPTIONS = {"train": {}, "eval": {},
                   "infer": {"task": None, "output": None, "split": "validation"},
                   "inspect": {"task": None, "split": "train", "num_examples": "3", "list": None, "csv": None,
                               "stats": None, "plot": None, "allow_missing_tasks": None}}


def main(argv: list[str]) -> int:
    command, gin_files, bindings, options = parse_args(list(argv))
    allowed = COMMAND_OPTIONS[command]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(f"unknown flags for {command!r}: {', '.join('--' + k for k in unknown)}; "
                         f"it takes {', '.join('--' + k for k in allowed) or 'only --gin_file and --gin.*'}.")
    opts = {**allowed, **options}
    parse_gin(gin_files, bindings)
    from flan_mix.train import loop
    if command == "train":
        loop.train()
    elif command == "eval":
        loop.evaluate()
    elif command == "infer":
        if not opts["task"]:
            raise UsageError("infer needs --task=NAME (list tasks with: python run.py inspect).")
        from flan_mix.infer import infer_task
        infer_task.infer(task=opts["task"], output=opts["output"], split=opts["split"])
    elif command == "inspect":
        from flan_mix.data import inspect_cli
        inspect_cli.main(task=opts["task"], split=opts["split"], num_examples=int(opts["num_examples"]),
                         list=opts["list"], csv=opts["csv"], stats=opts["stats"], plot=opts["plot"],
                         allow_missing_tasks=opts["allow_missing_tasks"])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        sys.exit(2)

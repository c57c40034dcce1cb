"""Train more than one model in one process: gin bindings applied for one run, then taken back.

A sweep (DoIT cells) or a curriculum (TAPIR rounds) trains several models whose configs differ in a few
bindings (model size, MODEL_DIR, the task, the steps). gin's configuration is process-global, so each run's
bindings are parsed on top of the caller's configuration and the caller's configuration is put back afterwards;
otherwise a binding of one model size (say T5Config.num_heads) would leak into the next size's run.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import gin
import gin.config


def _snapshot() -> dict:
    # gin has no public save/restore; _CONFIG maps (scope, selector) -> {param: value}. Parsing only adds or
    # replaces entries, so a two-level copy is a faithful snapshot (values are never mutated in place).
    return {key: dict(params) for key, params in gin.config._CONFIG.items()}


def _restore(snapshot: dict) -> None:
    with gin.unlock_config():
        gin.config._CONFIG.clear()
        gin.config._CONFIG.update({key: dict(params) for key, params in snapshot.items()})


def split_entries(entries: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """A size/config spec -> (gin files, bindings): an entry ending in .gin is a file, anything else a binding."""
    if isinstance(entries, str):
        entries = [entries]
    files = [e for e in entries if e.strip().endswith(".gin")]
    return files, [e for e in entries if not e.strip().endswith(".gin")]


@contextlib.contextmanager
def gin_overrides(entries: Sequence[str] = (), bindings: Sequence[str] = ()) -> Iterator[None]:
    """Within the block, `entries` (gin files or bindings, see split_entries) and then `bindings` apply on top
    of the current configuration; on leaving, the configuration is what it was."""
    if not hasattr(gin.config, "_CONFIG"):
        raise RuntimeError("this gin-config version has no gin.config._CONFIG; flan_mix.train.overrides needs "
                           "it to undo per-run bindings. Install the gin-config version in setup.py.")
    saved = _snapshot()
    files, own = split_entries(entries)
    try:
        gin.parse_config_files_and_bindings(files, list(own) + list(bindings), finalize_config=False)
        yield
    finally:
        _restore(saved)


def train_with(entries: Sequence[str] = (), bindings: Sequence[str] = ()):
    """flan_mix.train.loop.train() under gin_overrides(entries, bindings); returns its TrainResult."""
    from flan_mix.train import loop
    with gin_overrides(entries, bindings):
        return loop.train()

"""The errors the data side shows its users: missing data (what, where, how to get it), malformed files (file,
location, problem), a missing optional package. One base class, DataError, so that a launcher can print any of
them as one line instead of a traceback; each keeps the builtin base its callers already catch."""
from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class DataError(Exception):
    """A data problem the user can fix: the message says what failed, where, and how to fix it."""


class MissingDataError(DataError, FileNotFoundError):
    """The data of a task is not where it was looked for."""

    def __init__(self, task: str, missing: str, how_to_get: str):
        self.task = task
        self.missing = missing
        self.how_to_get = how_to_get
        super().__init__(f"Task {task!r}: {missing}. {how_to_get}")

    def __str__(self) -> str:  # FileNotFoundError would otherwise format errno/filename
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.task, self.missing, self.how_to_get))


class MalformedDataError(DataError, ValueError):
    """A data file does not follow its format. The message is 'file:location: problem'."""

    def __init__(self, file: os.PathLike | str, location: str, problem: str):
        self.file = str(file)
        self.location = location
        self.problem = problem
        super().__init__(f"{file}:{location}: {problem}")

    def __reduce__(self):
        return (type(self), (self.file, self.location, self.problem))


class OptionalDependencyError(DataError, ImportError):
    """An optional package a loader needs is not installed."""


def report_skipped(task: str, path: Path, skipped: list[str]) -> None:
    """Logs what skip_malformed=True skipped (nothing is dropped silently)."""
    if skipped:
        logger.warning(
            "Task %r: skipped %d malformed record(s) in %s (skip_malformed=True); first: %s",
            task, len(skipped), path, skipped[0],
        )

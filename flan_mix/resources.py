"""Where the shipped config files (gin/ and configs/) are, in a checkout and in an installed package.

The repository keeps gin/ and configs/ at the top level; setup.py installs them as flan_mix/gin and
flan_mix/configs (package_dir), so a non-editable install finds them beside the code.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_root() -> Path:
    """The directory that holds gin/ and configs/: the installed package, else the checkout."""
    if (_PACKAGE / "gin").is_dir():
        return _PACKAGE
    return _PACKAGE.parent


def resource_path(relative: str) -> Path:
    """E.g. resource_path("configs/catalog/flan2022_tasks.csv")."""
    return resource_root() / relative

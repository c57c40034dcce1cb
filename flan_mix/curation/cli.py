"""`python run.py curate STAGE --flag=value ...`: each stage, the module and function behind it, and its flags
(name -> default; None = required or unset). Kept import-free so the launcher can check flags before loading JAX.

Each stage function takes the flags as keyword arguments (strings, as given) after gin is parsed, and raises
ValueError with the flag's name for a bad value.
"""
from __future__ import annotations

STAGES: dict[str, tuple[str, str, dict[str, str | None]]] = {
    "export": ("flan_mix.curation.export", "export_command",
               {"task": None, "output": None, "split": "train", "max_examples": None}),
    "ifd": ("flan_mix.curation.ifd", "ifd_command",
            {"input": None, "output": None, "batch_size": "16", "select_fraction": None, "select_top": None,
             "selected_output": None, "pre_experience": None}),
    "reflect": ("flan_mix.curation.reflection", "reflect_command",
                {"input": None, "output": None, "mode": "instruction", "oracle": None, "oracle_url": None,
                 "oracle_model": None, "selective": None}),
    "tapir": ("flan_mix.curation.tapir", "tapir_command",
              {"input": None, "output_dir": None, "oracle": "overlap", "oracle_url": None, "oracle_model": None,
               "student": None}),
    "doit": ("flan_mix.analysis.growth", "doit_command", {"output_dir": None}),
}

SERVE_OPTIONS: dict[str, str | None] = {"host": "127.0.0.1", "port": "8000"}

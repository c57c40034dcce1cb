#!/usr/bin/env python
"""The one launcher of flan_mix: python run.py [train|eval|infer|inspect|convert|curate|serve] --gin_file=... --gin.X=...

The commands live in flan_mix/launcher.py (so an installed package has them too: `flan-mix ...`).
"""
import sys

from flan_mix.launcher import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

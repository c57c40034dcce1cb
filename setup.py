"""flan_mix: Flan-style instruction tuning in JAX (seqio data, Flax models, Pallas attention)."""
import setuptools

INSTALL_REQUIRES = [
    # jax 0.10.2 is the newest release for Python 3.11; the GPU machines run 0.11.x on Python 3.12.
    "jax>=0.10.2,<0.13",
    "flax>=0.12.0,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.11.0,<0.13",
    "seqio>=0.0.19,<0.1",
    "tensorflow-datasets>=4.9.6,<5",
    "gin-config>=0.5.0,<0.6",
    "sentencepiece>=0.2.0,<0.3",
    "numpy>=1.26,<3",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "safetensors>=0.4",  # HF checkpoint import/export (flan_mix.models.convert)
    "tokenizers>=0.20",  # an imported model's tokenizer.json (flan_mix.data.hf_vocab)
    "aiohttp>=3.14,<3.15",  # run.py serve (server) and the HTTP oracle (client): one library for both
]

EXTRAS = {
    # The HF peer tests run our T5 against transformers on torch's CPU build.
    # nbclient + ipykernel execute examples/explore_mixture.ipynb in the notebook test.
    "test": ["pytest>=8", "pytest-timeout>=2.3", "torch==2.13.0", "transformers>=4.50", "matplotlib>=3.8",
             "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "scikit-learn>=1.4"],
    "hf": ["datasets>=3.0"],
    "plot": ["matplotlib>=3.8"],
    # IFD's pre-experience clusters instructions with K-means (curate ifd --pre_experience=true).
    "curation": ["scikit-learn>=1.4"],
}

setuptools.setup(
    name="flan_mix",
    version="0.1.0",
    description="Flan 2022-style instruction tuning in JAX: seqio mixtures, T5 training, Pallas flash attention.",
    python_requires=">=3.11",
    # gin/ and configs/ sit at the top of the repository; installed, they become flan_mix/gin and
    # flan_mix/configs, where flan_mix.resources looks for them.
    packages=setuptools.find_packages(include=["flan_mix", "flan_mix.*"]) + ["flan_mix.gin", "flan_mix.configs"],
    package_dir={"flan_mix.gin": "gin", "flan_mix.configs": "configs"},
    package_data={"flan_mix.gin": ["**/*.gin"], "flan_mix.configs": ["**/*.csv", "**/*.md"]},
    entry_points={"console_scripts": ["flan-mix = flan_mix.launcher:console_main"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)

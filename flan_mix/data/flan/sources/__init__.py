"""The data sources of the Flan 2022 collection, one module per loader kind (cot, niv2, tfds, hf) behind one
declared interface (base.ExampleSource); by_kind picks a catalog task's source."""

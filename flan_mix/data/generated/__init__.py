"""The offline generated mini-collection behind the embedded default (`python run.py`): the tasks and their
examples (collection, generators), their renderings and the vocabulary corpus (rendering), the seqio tasks
(seqio_tasks) and the training mixture (mixture)."""

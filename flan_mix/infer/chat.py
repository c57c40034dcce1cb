"""Chat messages in, completions out, on a loaded checkpoint: what `run.py serve` and the local oracle share.

Our models read one prompt string, not a conversation, so a conversation is rendered to text first
(render_chat). A lone user message is passed through verbatim, so a Flan-tuned model sees exactly the kind of
prompt it was trained on; anything richer becomes role-labelled turns ending in an "Assistant:" cue:

    System: <system content>

    User: <first user message>

    Assistant: <earlier reply>

    User: <next message>

    Assistant:

Decoding goes through Model.predict with fixed shapes -- prompts padded to `max_prompt_tokens`, batches padded to
`batch_size`, decode lengths rounded up to a power of two -- so a handful of compiled programs serve every request.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from flan_mix.infer import decoding
from flan_mix.infer.loading import LoadedModel
from flan_mix.models.base import DecodingConfig
from flan_mix.runtime import partitioning

ROLES = ("system", "user", "assistant")
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
MIN_DECODE_BUCKET = 16


def render_chat(messages: Sequence[dict]) -> str:
    """The prompt string for chat `messages` (see the module docstring for the layout)."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    turns = [f"{ROLE_LABELS[m['role']]}: {m['content']}" for m in messages]
    return "\n\n".join(turns + ["Assistant:"])


def decode_bucket(max_tokens: int, limit: int) -> int:
    """The decode length actually compiled for a request of max_tokens: the next power of two (at least
    MIN_DECODE_BUCKET), capped at limit. Greedy text is cut back to max_tokens afterwards."""
    bucket = MIN_DECODE_BUCKET
    while bucket < max_tokens:
        bucket *= 2
    return min(bucket, limit)


@dataclasses.dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (ran out of max_tokens)


class PromptTooLong(ValueError):
    """A prompt with more tokens than the model reads (max_prompt_tokens)."""


class ChatModel:
    """A LoadedModel that answers prompts. Not thread-safe: callers run one complete() at a time (serve keeps a
    single decode thread; the local oracle calls it from its own thread)."""

    def __init__(self, loaded: LoadedModel, *, max_prompt_tokens: int, max_decode_len: int, batch_size: int):
        self.loaded = loaded
        self.max_prompt_tokens = max_prompt_tokens
        self.max_decode_len = max_decode_len
        self.batch_size = batch_size

    def encode(self, prompt: str) -> np.ndarray:
        """Prompt ids + EOS (the way the data pipeline ends an input); too long raises PromptTooLong rather than
        silently answering a different question."""
        vocab = self.loaded.vocabulary
        ids = list(vocab.encode(prompt)) + [vocab.eos_id]
        if len(ids) > self.max_prompt_tokens:
            raise PromptTooLong(f"the prompt is {len(ids)} tokens, more than the {self.max_prompt_tokens} this "
                                "server reads (bind serve_command.max_prompt_tokens or TASK_FEATURE_LENGTHS "
                                "'inputs' higher, or send a shorter conversation).")
        return np.asarray(ids, np.int32)

    def complete(self, prompts: Sequence[np.ndarray], *, max_tokens: int, temperature: float = 0.0,
                 seed: int = 0, stop: Sequence[str] = (),
                 per_row: Sequence[tuple[int, Sequence[str]]] | None = None) -> list[Completion]:
        """One Completion per encoded prompt, decoded in padded batches of batch_size.

        per_row: (max_tokens, stop strings) for each prompt, each at most max_tokens (the batch decodes that
        far); by default every row gets max_tokens and stop. Greedy text cut to a row's max_tokens is the text
        that row would get alone.

        With sampling (temperature > 0) a row's sample depends on its batch neighbours' positions, so a caller
        that wants `seed` to reproduce a text sends that prompt alone (serve does).
        """
        if max_tokens > self.max_decode_len:
            raise ValueError(f"max_tokens={max_tokens} is more than this model decodes ({self.max_decode_len}).")
        vocab = self.loaded.vocabulary
        config = DecodingConfig(max_decode_len=decode_bucket(max_tokens, self.max_decode_len),
                                temperature=float(temperature), valid_vocab_size=vocab.vocab_size)
        rng = jax.random.PRNGKey(seed)
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            rows = decoding.pad_rows(chunk + [np.zeros(1, np.int32)] * (self.batch_size - len(chunk)),
                                     self.max_prompt_tokens)
            with self.loaded.mesh:
                rows = jax.device_put(rows, partitioning.replicated(self.loaded.mesh))
                ids = self.loaded.model.predict(self.loaded.params, {"inputs": rows}, config,
                                                rng=jax.random.fold_in(rng, start))
            ids = np.asarray(jax.device_get(ids))[:len(chunk)]
            for i, (prompt, row) in enumerate(zip(chunk, ids), start=start):
                row_max, row_stop = per_row[i] if per_row is not None else (max_tokens, stop)
                out.append(self._finish(prompt, row.tolist(), row_max, row_stop))
        return out

    def _finish(self, prompt: np.ndarray, row: list[int], max_tokens: int, stop: Sequence[str]) -> Completion:
        vocab = self.loaded.vocabulary
        row = row[:max_tokens]
        ended = vocab.eos_id in row
        if ended:
            row = row[:row.index(vocab.eos_id)]
        row = [t for t in row if t != 0]
        text = vocab.decode(row)
        cut = decoding.cut_at_stop(text, stop)
        if cut != text:  # count what is returned, not what was generated past the stop string
            text, ended = cut, True
            row = list(vocab.encode(text)) if text else []
        return Completion(text=text, prompt_tokens=int(len(prompt)), completion_tokens=len(row),
                          finish_reason="stop" if ended else "length")

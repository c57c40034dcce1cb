"""An Oracle over a checkpoint in this process: conversations rendered by flan_mix.infer.chat and decoded in
batches. For debugging and small runs; a real teacher usually runs behind `run.py serve` (or any OpenAI-compatible
endpoint) and is reached through flan_mix.curation.http_oracle."""
from __future__ import annotations

from typing import Optional, Sequence

import gin

from flan_mix.curation.oracle import BatchedOracle, OracleError
from flan_mix.infer.chat import ChatModel, PromptTooLong, render_chat
from flan_mix.infer.loading import LoadedModel


@gin.configurable
class LocalOracle(BatchedOracle):
    def __init__(self, loaded: LoadedModel, *, name: str, max_prompt_tokens: int, max_decode_len: int,
                 batch_size: int = 8):
        self.name = name
        self.chat = ChatModel(loaded, max_prompt_tokens=max_prompt_tokens, max_decode_len=max_decode_len,
                              batch_size=batch_size)

    def complete_many(self, conversations: Sequence[Sequence[dict]], *, max_tokens: int = 256,
                      temperature: float = 0.0, seed: Optional[int] = None) -> list[str | OracleError]:
        # A prompt the model cannot read is that conversation's error; the others still decode together.
        results: list[str | OracleError] = [OracleError("not decoded")] * len(conversations)
        encoded, rows = [], []
        for i, messages in enumerate(conversations):
            try:
                encoded.append(self.chat.encode(render_chat(messages)))
                rows.append(i)
            except PromptTooLong as e:
                results[i] = OracleError(f"{self.name}: {e}")
        max_tokens = min(max_tokens, self.chat.max_decode_len)  # a local model decodes what it was built for
        for i, c in zip(rows, self.chat.complete(encoded, max_tokens=max_tokens, temperature=temperature,
                                                 seed=seed or 0)):
            results[i] = c.text
        return results

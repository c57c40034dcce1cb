"""The oracle: a chat model that curation stages ask to critique, rewrite, answer, judge or classify.

Two implementations stand behind one Protocol: a local flan_mix checkpoint (flan_mix.curation.local_oracle)
and an OpenAI-compatible HTTP endpoint (flan_mix.curation.http_oracle). Stages take any Oracle.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable


class OracleError(RuntimeError):
    """An oracle call that failed for good (after its retries); the message says which endpoint and why."""


@runtime_checkable
class Oracle(Protocol):
    name: str  # recorded in each output record (e.g. "local:/tmp/run" or "http://127.0.0.1:8000/v1 model=x")

    def complete(self, messages: Sequence[dict], *, max_tokens: int = 256, temperature: float = 0.0,
                 seed: Optional[int] = None) -> str:
        """The assistant's reply to chat `messages` ([{"role": "system"|"user"|"assistant", "content": str}]).
        Raises OracleError when no reply can be had."""
        ...

    def complete_many(self, conversations: Sequence[Sequence[dict]], *, max_tokens: int = 256,
                      temperature: float = 0.0, seed: Optional[int] = None) -> list[str | OracleError]:
        """complete() for many conversations at once (batched locally, concurrent over HTTP); a failed one
        gives its OracleError in its place instead of raising, so the caller records it and loses nothing."""
        ...


class BatchedOracle:
    """complete() in terms of complete_many(), which every implementation provides."""

    def complete(self, messages: Sequence[dict], *, max_tokens: int = 256, temperature: float = 0.0,
                 seed: Optional[int] = None) -> str:
        result = self.complete_many([messages], max_tokens=max_tokens, temperature=temperature, seed=seed)[0]
        if isinstance(result, OracleError):
            raise result
        return result

"""An Oracle behind an OpenAI-compatible /v1/chat/completions endpoint (`run.py serve`, vLLM, a hosted API),
reached with aiohttp.

Where it points:
  URL    --oracle_url=http://127.0.0.1:8000/v1, else $FLAN_MIX_ORACLE_URL
  model  --oracle_model=NAME, else $FLAN_MIX_ORACLE_MODEL, else the endpoint's only model (GET /models)
  key    $FLAN_MIX_ORACLE_API_KEY only -- never a flag, so it stays out of shell history and MODEL_DIR/config.gin.
         It is sent as a Bearer token and nothing else: not in `name`, repr, logs or error messages (any echo of it
         in a server's reply is masked before it is recorded).

How it copes with a flaky endpoint (every number gin-configurable as HttpOracle.*):
  - each request has a total timeout (timeout_s);
  - 408, 429, 5xx, timeouts, connection errors and replies that are not the expected JSON are retried, up to
    max_retries times, after an exponential backoff (backoff_s * 2**attempt, capped at max_backoff_s) with jitter,
    or after the server's Retry-After when it sends one (capped at max_retry_after_s);
  - other 4xx errors are the request's fault and are not retried;
  - at most `concurrency` requests are in flight at once (an asyncio.Semaphore);
  - a request that still fails becomes an OracleError in complete_many's result, naming the endpoint and every
    attempt's failure, so the caller records it instead of losing the record.
"""
from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import logging
import os
import random
import threading
import time
from typing import Any, Optional, Sequence

import aiohttp
import gin

from flan_mix.curation.oracle import BatchedOracle, OracleError

log = logging.getLogger(__name__)
ENV_URL = "FLAN_MIX_ORACLE_URL"
ENV_MODEL = "FLAN_MIX_ORACLE_MODEL"
ENV_API_KEY = "FLAN_MIX_ORACLE_API_KEY"
RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_BODY_EXCERPT = 200  # characters of a failed reply kept in the error message


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def resolve_url(url: Optional[str]) -> str:
    """The endpoint from the flag, else the environment, checked."""
    url = url or os.environ.get(ENV_URL)
    if not url:
        raise ValueError(f"no oracle endpoint: pass --oracle_url=http://HOST:PORT/v1 or set ${ENV_URL} "
                         "(start one with `python run.py serve --gin.MODEL_DIR=...`).")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--oracle_url={url}: expected an http:// or https:// URL such as "
                         "http://127.0.0.1:8000/v1.")
    return url


@gin.configurable
class HttpOracle(BatchedOracle):
    def __init__(self, url: Optional[str] = None, model: Optional[str] = None, *, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 max_retry_after_s: float = 120.0, concurrency: int = 8):
        url = resolve_url(url)
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or concurrency < 1:
            raise ValueError(f"HttpOracle: need timeout_s > 0, max_retries >= 0, backoff_s >= 0 and concurrency "
                             f">= 1; got {timeout_s}, {max_retries}, {backoff_s}, {concurrency} (gin bindings "
                             "HttpOracle.*).")
        self.base_url = url.rstrip("/")
        self.model = model or os.environ.get(ENV_MODEL) or None
        self.timeout_s, self.max_retries = float(timeout_s), int(max_retries)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.max_retry_after_s, self.concurrency = float(max_retry_after_s), int(concurrency)
        self.__api_key = os.environ.get(ENV_API_KEY) or None
        self.stats: collections.Counter = collections.Counter()  # requests, retries, failures, by reason
        # Jitter only spreads out clients retrying together; it never changes what is written, so it needs no seed.
        self._jitter = random.Random()

    @property
    def name(self) -> str:
        return f"{self.base_url} model={self.model or 'auto'}"

    def __repr__(self) -> str:
        return f"HttpOracle({self.name!r}, api_key={'set' if self.__api_key else 'unset'})"

    def _redact(self, text: str) -> str:
        return text.replace(self.__api_key, "***") if self.__api_key else text

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.__api_key}"} if self.__api_key else {}

    # ----- the Oracle protocol -----
    def complete_many(self, conversations: Sequence[Sequence[dict]], *, max_tokens: int = 256,
                      temperature: float = 0.0, seed: Optional[int] = None) -> list[str | OracleError]:
        coro = self._complete_all(list(conversations), max_tokens=max_tokens, temperature=temperature, seed=seed)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # Called from inside a running event loop (a notebook): run ours on a thread of its own.
        out: list = []
        thread = threading.Thread(target=lambda: out.append(asyncio.run(coro)))
        thread.start()
        thread.join()
        return out[0]

    # ----- the requests -----
    async def _complete_all(self, conversations, **params) -> list[str | OracleError]:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers()) as session:
            if self.model is None:
                try:
                    self.model = await self._discover_model(session)
                except OracleError as e:
                    return [e] * len(conversations)
            semaphore = asyncio.Semaphore(self.concurrency)
            return list(await asyncio.gather(*(self._complete_one(session, semaphore, messages, **params)
                                               for messages in conversations)))

    async def _discover_model(self, session: aiohttp.ClientSession) -> str:
        """The endpoint's model when it serves exactly one (as `run.py serve` does)."""
        url = f"{self.base_url}/models"
        try:
            async with session.get(url) as resp:
                body = await resp.json(content_type=None)
            ids = [m["id"] for m in body["data"]]
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError) as e:
            raise OracleError(f"{url}: cannot list the models ({type(e).__name__}: {self._redact(str(e))}); pass "
                              f"--oracle_model=NAME or set ${ENV_MODEL}.") from None
        if len(ids) != 1:
            raise OracleError(f"{url} serves {len(ids)} models ({', '.join(map(str, ids[:10]))}); choose one with "
                              f"--oracle_model=NAME or ${ENV_MODEL}.")
        return ids[0]

    async def _complete_one(self, session, semaphore, messages, *, max_tokens, temperature, seed) -> str | OracleError:
        payload: dict[str, Any] = {"model": self.model, "messages": list(messages), "max_tokens": max_tokens,
                                   "temperature": temperature}
        if seed is not None:
            payload["seed"] = seed
        failures: list[str] = []
        for attempt in range(self.max_retries + 1):
            self.stats["requests"] += 1
            try:
                async with semaphore:
                    return await self._post(session, payload)
            except _Retryable as e:
                failures.append(str(e))
                self.stats[f"retryable: {str(e).split(' (')[0]}"] += 1
                if attempt == self.max_retries:
                    break
                if e.retry_after is not None:
                    delay = min(e.retry_after, self.max_retry_after_s)
                else:
                    delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * self._jitter.uniform(0.5, 1.0)
                self.stats["retries"] += 1
                log.warning("oracle %s: attempt %d/%d failed (%s); retrying in %.2fs", self.base_url, attempt + 1,
                            self.max_retries + 1, e, delay)
                await asyncio.sleep(delay)
            except OracleError as e:  # the request's own fault (4xx): retrying cannot help
                self.stats["failed"] += 1
                return e
        self.stats["failed"] += 1
        return OracleError(f"{self.base_url}/chat/completions: gave up after {len(failures)} attempts: "
                           + "; ".join(f"[{i + 1}] {f}" for i, f in enumerate(failures)))

    async def _post(self, session: aiohttp.ClientSession, payload: dict) -> str:
        url = f"{self.base_url}/chat/completions"
        try:
            async with session.post(url, json=payload) as resp:
                text = await resp.text(errors="replace")
                status, retry_after = resp.status, parse_retry_after(resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            raise _Retryable(f"connection error ({type(e).__name__}: {self._redact(str(e))})") from None
        excerpt = self._redact(text[:_BODY_EXCERPT])
        if status in RETRY_STATUSES:
            raise _Retryable(f"HTTP {status} ({excerpt!r})", retry_after)
        if status >= 400:
            raise OracleError(f"{url}: HTTP {status}, not retried (the request was refused): {excerpt!r}")
        try:
            content = json.loads(text)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(f"garbage reply (not an OpenAI chat completion: {excerpt!r})") from None
        if not isinstance(content, str):
            raise _Retryable(f"garbage reply (message content is {type(content).__name__}, not text)")
        return content

"""`python run.py serve --gin.MODEL_DIR=... [--host=127.0.0.1 --port=8000]`: a checkpoint behind an
OpenAI-compatible HTTP API (aiohttp), so curation stages -- or any OpenAI client -- can use it as an oracle.

  POST /v1/chat/completions   {"messages": [...], "max_tokens", "temperature", "seed", "stop", "model"}
  GET  /v1/models             the one model served (its id: serve_command.model_name, else MODEL_DIR's basename)
  GET  /health                {"status": "ok"}

Conversations are rendered to one prompt string by flan_mix.infer.chat.render_chat. Requests queue up and a single
decode thread takes them in batches: greedy requests with the same decode length share a batch; a sampled request
is decoded alone so its `seed` reproduces its text whatever else is in flight. The event loop never decodes, so
/health and new requests are answered while a batch runs.

There is no authentication: the server binds loopback by default and warns when told to bind anything else.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import os
import signal
import sys
import time
import uuid
from typing import Any

import gin
from aiohttp import web

from flan_mix.infer.chat import ChatModel, Completion, PromptTooLong, ROLES, decode_bucket, render_chat

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_STOP_STRINGS = 4  # as OpenAI's API


class BadRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclasses.dataclass
class ChatRequest:
    prompt: Any  # encoded prompt ids
    max_tokens: int
    temperature: float
    seed: int
    stop: tuple[str, ...]


def parse_request(body: Any, chat: ChatModel, model_id: str, default_max_tokens: int) -> ChatRequest:
    """A /v1/chat/completions body checked field by field; BadRequest names the first bad field."""
    if not isinstance(body, dict):
        raise BadRequest("body", "expected a JSON object")
    model = body.get("model")
    if model is not None and model != model_id:
        raise BadRequest("model", f"this server serves {model_id!r} only (GET /v1/models), got {model!r}")
    if body.get("stream"):
        raise BadRequest("stream", "streaming is not supported; send stream=false or leave it out")
    if body.get("n", 1) != 1:
        raise BadRequest("n", "only n=1 is supported")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages", "expected a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}].role", f"expected one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise BadRequest(f"messages[{i}].content", "expected a string")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max_tokens))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= chat.max_decode_len:
        raise BadRequest("max_tokens", f"expected an integer from 1 to {chat.max_decode_len}, got {max_tokens!r}")
    temperature = body.get("temperature", 0.0)
    temperature = 0.0 if temperature is None else temperature
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature)
            or not 0 <= temperature <= 2):
        raise BadRequest("temperature", f"expected a number from 0 to 2, got {temperature!r}")
    seed = body.get("seed")
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise BadRequest("seed", f"expected an integer from 0 to 2**32 - 1, got {seed!r}")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("stop", f"expected a non-empty string or a list of at most {MAX_STOP_STRINGS} of them")
    try:
        prompt = chat.encode(render_chat(messages))
    except PromptTooLong as e:
        raise BadRequest("messages", str(e)) from None
    return ChatRequest(prompt, max_tokens, float(temperature), seed, tuple(stop))


class Batcher:
    """The queue between the event loop and the one decode thread."""

    def __init__(self, chat: ChatModel):
        self.chat = chat
        self.queue: asyncio.Queue = asyncio.Queue()
        # One worker thread: decodes never overlap (one compiled program on the devices at a time).
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.batches = 0

    async def submit(self, request: ChatRequest) -> Completion:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((request, future))
        return await future

    def _key(self, r: ChatRequest):
        bucket = decode_bucket(r.max_tokens, self.chat.max_decode_len)
        return ("greedy", bucket) if r.temperature == 0 else ("sampled", id(r))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            while not self.queue.empty():  # whatever arrived while the last batch ran
                items.append(self.queue.get_nowait())
            groups: dict[Any, list] = {}
            for item in items:
                groups.setdefault(self._key(item[0]), []).append(item)
            for group in groups.values():
                for start in range(0, len(group), self.chat.batch_size):
                    await self._decode(loop, group[start:start + self.chat.batch_size])

    async def _decode(self, loop, group) -> None:
        live = [(r, f) for r, f in group if not f.done()]  # a client that hung up cancelled its future
        if not live:
            return
        self.batches += 1
        try:
            results = await loop.run_in_executor(self.executor, self._complete_rows, live)
        except Exception as e:  # a decode failure answers every request of the batch with a 500
            log.exception("decode failed")
            for _, f in live:
                if not f.done():
                    f.set_exception(e)
            return
        for (_, f), c in zip(live, results):
            if not f.done():
                f.set_result(c)

    def _complete_rows(self, live) -> list[Completion]:
        """Decodes a batch at its longest max_tokens, then gives each row its own max_tokens and stop strings."""
        first = live[0][0]
        longest = max(r.max_tokens for r, _ in live)
        return self.chat.complete([r.prompt for r, _ in live], max_tokens=longest,
                                  temperature=first.temperature, seed=first.seed,
                                  per_row=[(r.max_tokens, r.stop) for r, _ in live])


def _error(status: int, field: str | None, message: str) -> web.Response:
    """OpenAI's error shape, plus the offending field."""
    kind = "invalid_request_error" if status == 400 else "server_error"
    return web.json_response({"error": {"message": message, "type": kind, "param": field, "code": None}},
                             status=status)


def make_app(chat: ChatModel, model_id: str, *, default_max_tokens: int) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    created = int(time.time())

    async def start_batcher(app):
        app["batcher"] = Batcher(chat)
        app["batcher_task"] = asyncio.create_task(app["batcher"].run())

    async def stop_batcher(app):
        app["batcher_task"].cancel()
        app["batcher"].executor.shutdown(wait=False, cancel_futures=True)

    async def health(request):
        return web.json_response({"status": "ok", "model": model_id})

    async def models(request):
        return web.json_response({"object": "list", "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": "flan_mix"}]})

    async def chat_completions(request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body", "body: the request body is not valid JSON")
        try:
            parsed = parse_request(body, chat, model_id, default_max_tokens)
        except BadRequest as e:
            return _error(400, e.field, str(e))
        try:
            c = await request.app["batcher"].submit(parsed)
        except Exception as e:  # noqa: BLE001 (reported to the client and logged by the batcher)
            return _error(500, None, f"decoding failed: {type(e).__name__}: {e}")
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason}],
            "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                      "total_tokens": c.prompt_tokens + c.completion_tokens}})

    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.on_startup.append(start_batcher)
    app.on_cleanup.append(stop_batcher)
    return app


def warn_if_exposed(host: str, port: int) -> bool:
    """A loud stderr banner when the server binds anything but loopback (it has no authentication)."""
    if host in LOOPBACK:
        return False
    banner = "!" * 78
    print(f"{banner}\nWARNING: --host={host} binds an address other than loopback (127.0.0.1). This server has "
          f"NO authentication:\nanyone who can reach {host}:{port} can run the model. Use --host=127.0.0.1 unless "
          f"you mean it.\n{banner}", file=sys.stderr, flush=True)
    return True


@gin.configurable
def serve_command(host: str = "127.0.0.1", port: str | int = 8000, *, model_name: str | None = None,
                  max_prompt_tokens: int | None = None, max_decode_len: int | None = None,
                  default_max_tokens: int | None = None, batch_size: int = 8,
                  checkpoint_step: int | None = None) -> None:
    """Serves MODEL_DIR's checkpoint until interrupted (Ctrl-C / SIGTERM).

    max_prompt_tokens and max_decode_len default to TASK_FEATURE_LENGTHS' inputs and targets (what the model was
    trained on); default_max_tokens (a request without max_tokens) defaults to max_decode_len.
    """
    from flan_mix.infer.loading import load_model
    from flan_mix.runtime.run_config import run_config
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"--port={port}: expected an integer (0 picks a free port).") from None
    if not 0 <= port < 65536:
        raise ValueError(f"--port={port}: expected 0..65535 (0 picks a free port).")
    run = run_config()
    lengths = run.task_feature_lengths
    chat = ChatModel(load_model(run.model_dir, checkpoint_step),
                     max_prompt_tokens=max_prompt_tokens or lengths["inputs"],
                     max_decode_len=max_decode_len or lengths["targets"], batch_size=batch_size)
    model_id = model_name or os.path.basename(os.path.normpath(run.model_dir))
    warn_if_exposed(host, port)
    app = make_app(chat, model_id, default_max_tokens=default_max_tokens or chat.max_decode_len)
    asyncio.run(_serve(app, host, port, run.model_dir, model_id))


async def _serve(app: web.Application, host: str, port: int, model_dir: str, model_id: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a clean shutdown (exit 0) on Ctrl-C or kill
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when 0 asked for a free one
    shown = f"[{host}]" if ":" in host else host
    print(f"model id: {model_id}", flush=True)
    print(f"serving {model_dir} on http://{shown}:{bound}/v1", flush=True)  # the ready line (tests wait for it)
    try:
        await stop.wait()
    finally:
        print("shutting down", flush=True)
        await runner.cleanup()

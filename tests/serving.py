"""Shared by the serve and reflection tests: a tiny checkpoint, `run.py serve` as a real subprocess (stopped by
the test that started it), and an in-process aiohttp endpoint that misbehaves on purpose."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A one-layer T5 on the generated collection's vocabulary. Prompts up to 768 tokens: the reflection prompts are
# about 560 tokens in this vocabulary.
BINDINGS = ["T5Config.emb_dim=32", "T5Config.num_heads=2", "T5Config.head_dim=16", "T5Config.mlp_dim=64",
            "T5Config.num_encoder_layers=1", "T5Config.num_decoder_layers=1",
            "TASK_FEATURE_LENGTHS={'inputs': 768, 'targets': 32}", "BATCH_SIZE=4",
            "register_generated_tasks.num_train=40", "register_generated_tasks.num_validation=6"]
GIN_FLAGS = [f"--gin.{b}" for b in BINDINGS]
READY = re.compile(r"^serving (?P<dir>.+) on (?P<url>http://\S+/v1)$")
SERVER_START_DEADLINE_S = 240


def parse_test_gin(model_dir: str) -> None:
    from flan_mix import launcher
    launcher.parse_gin(["gin/runs/default.gin"], BINDINGS + [f"MODEL_DIR='{model_dir}'"])


def make_checkpoint(model_dir: str) -> None:
    """A randomly initialised tiny model saved as MODEL_DIR/checkpoints/0 -- restored exactly as a trained one
    (compiling a training step would cost these tests a minute and prove nothing about serving)."""
    import gin
    import jax
    from flan_mix.data import registration
    from flan_mix.models.build import build_model
    from flan_mix.runtime import checkpoints
    parse_test_gin(model_dir)
    try:
        vocabulary = registration.register_all()
        model = build_model(vocab_size=vocabulary.vocab_size)
        checkpoints.save_params(model_dir, model.init_params(jax.random.PRNGKey(0)))
    finally:
        gin.clear_config()


class Server:
    """`python run.py serve` on a free port; use as a context manager so it is always stopped."""

    def __init__(self, model_dir: str, *extra: str, env: dict | None = None, log_dir: str | None = None):
        self.stderr_path = os.path.join(log_dir or model_dir, f"serve_{os.getpid()}_{time.time_ns()}.err")
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "serve", *GIN_FLAGS, f"--gin.MODEL_DIR='{model_dir}'", "--port=0", *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = None

    def _pump(self):
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_ready(self) -> str:
        deadline = time.monotonic() + SERVER_START_DEADLINE_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            m = READY.match(line)
            if m:
                self.url = m.group("url")
                return self.url
        raise AssertionError(f"run.py serve was not ready within {SERVER_START_DEADLINE_S}s (exit "
                             f"{self.proc.poll()}):\n{''.join(self.stdout)}\n{self.stderr()[-3000:]}")

    def stderr(self) -> str:
        self._stderr.flush()
        with open(self.stderr_path) as f:
            return f.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._stderr.close()
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def post_json(url: str, body, timeout: float = 120.0) -> tuple[int, dict]:
    """One blocking POST with aiohttp (the project's HTTP library)."""
    import aiohttp

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
            async with s.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
                return r.status, await r.json(content_type=None)
    return asyncio.run(go())


def get_json(url: str, timeout: float = 60.0) -> tuple[int, dict]:
    import aiohttp

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(url) as r:
                return r.status, await r.json(content_type=None)
    return asyncio.run(go())


class BackgroundApp:
    """An aiohttp web.Application served on 127.0.0.1 (a free port) by an event loop on its own thread, so a test
    (or a subprocess it starts) can talk to it while the test thread blocks. A context manager: always stopped."""

    def __init__(self, app):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = None

    def __enter__(self) -> "BackgroundApp":
        from aiohttp import web
        self._thread.start()

        async def start():
            self.runner = web.AppRunner(self.app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]
        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

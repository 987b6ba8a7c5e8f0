"""Test helpers that start real servers on 127.0.0.1: the sandbox app in a thread, or the
sandbox as its own process (`python -m sandbox`), as `leadflow up` runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a daemon thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


@contextmanager
def http_process(
    cmd: Sequence[str], url: str, name: str, *, env: Mapping[str, str], timeout: float = 60
) -> Iterator[str]:
    """Run `cmd` until `url`/health answers 200; yields `url`; stops the process afterwards."""
    proc = subprocess.Popen(
        list(cmd), cwd=REPO, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{name} did not answer /health"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def sandbox_process(
    data_dir: Path,
    *,
    seed: int,
    businesses: int,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[int]:
    """`python -m sandbox` on a free port until it answers /health; yields the port."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port),
           "--seed", str(seed), "--businesses", str(businesses), "--data-dir", str(data_dir),
           *args]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with http_process(cmd, url, "sandbox", env={**os.environ, **(env or {})}, timeout=30):
        yield port


@contextmanager
def api_instance(settings: Any, instance: str, **env: str) -> Iterator[str]:
    """One more API instance (`python -m api`) with its own settings; yields its base URL."""
    from leadflow import services as svc

    port = free_port()
    cmd = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port),
           "--instance", instance]  # fmt: skip
    child = svc.child_env(settings, {**svc.prefect_env(settings), **env})
    with http_process(cmd, f"http://127.0.0.1:{port}", "API instance", env=child) as url:
        yield url


@contextmanager
def embedded_mongo(data_dir: Path) -> Iterator[str]:
    """Its own nx-27017 (the embedded MongoDB-wire server) on a free port; yields its URL.
    For tests that need MongoDB but not the whole session stack."""
    from leadflow.services import mongo_ping, venv_bin

    port = free_port()
    cmd = [
        venv_bin("nx-27017"),
        "--host", "127.0.0.1", "-p", str(port), "--data-dir", str(data_dir),
        "--pid-file", str(data_dir / "nx.pid"), "--log-file", str(data_dir / "nx.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"mongodb://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while not mongo_ping(url, timeout=0.2):
            assert proc.poll() is None, "nx-27017 exited"
            assert time.monotonic() < deadline, "nx-27017 did not answer ping"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)

"""Start, stop and inspect the local services behind `leadflow up / down / status`.

Services, in start order: the embedded MongoDB-wire server (nx-27017), the Prefect server,
the sandbox, then (after the Prefect objects are set up) a Prefect process worker.

State lives under ``settings.home_dir``: ``run/<name>.pid`` (pid and process start time, so
a recycled pid is never mistaken for ours) and ``logs/<name>.log``. Every service is started
in its own session/process group, so stopping it also stops whatever it spawned (uvicorn,
flow-run subprocesses, ...).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

from leadflow.settings import PROJECT_DIR, Settings

# Start order; `down` stops in reverse.
SERVICE_NAMES: tuple[str, ...] = ("mongo", "prefect", "sandbox", "mail", "worker", "api")

# Default worker poll interval (s) when PREFECT_WORKER_QUERY_SECONDS is not set in the
# environment; Prefect's own default (10 s) makes `leadflow run` feel sluggish locally.
DEFAULT_WORKER_QUERY_SECONDS = "5"

Echo = Callable[[str], None]


class ServiceError(RuntimeError):
    """A service could not be started or checked; the message is meant for the user."""


class PortInUseError(ServiceError):
    """The port a service needs is held by a program that is not ours."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    up: bool
    address: str
    pid: int | None = None
    # False when the service is external (LEADFLOW_MONGODB_URI / LEADFLOW_PREFECT_API_URL):
    # we only check it, we never start or stop it.
    managed: bool = True

    def line(self, width: int = 8) -> str:
        return f"{self.name:<{width}}  {'up' if self.up else 'down':<4}  {self.address}"


# --------------------------------------------------------------------------------------
# files and processes
# --------------------------------------------------------------------------------------


def run_dir(settings: Settings) -> Path:
    return settings.home_dir / "run"


def pid_file(settings: Settings, name: str) -> Path:
    return run_dir(settings) / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def _write_pid(path: Path, proc: psutil.Process) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{proc.pid}\n{proc.create_time()!r}\n")


def read_pid(settings: Settings, name: str) -> int | None:
    """The pid of our running `name` service, or None (stale pid files are removed)."""
    path = pid_file(settings, name)
    try:
        lines = path.read_text().split()
        pid, created = int(lines[0]), float(lines[1])
    except (OSError, ValueError, IndexError):
        return None
    try:
        proc = psutil.Process(pid)
        # The create time guards against pid reuse after a reboot or a crash.
        if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
            return pid
    except psutil.Error:
        pass
    path.unlink(missing_ok=True)
    return None


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (or has bound) host:port."""
    # A listener answers a connect; a socket that is bound but not listening does not, so
    # also try to bind. SO_REUSEADDR mirrors what the servers do, so our own leftover
    # TIME_WAIT connections do not count as "in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free TCP ports (bound together, so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def venv_bin(name: str) -> str:
    """A console script next to this interpreter (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"`{name}` not found next to {sys.executable} nor on PATH")
    return found


def _spawn(
    settings: Settings, name: str, cmd: list[str], env: Mapping[str, str], cwd: Path
) -> psutil.Process:
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = log_file(settings, name)
    with log.open("ab") as out:
        out.write(
            f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode()
        )
        out.flush()
        # start_new_session: own process group, so `down` can signal the whole tree, and a
        # Ctrl-C in the terminal that ran `leadflow up` does not kill the services.
        popen = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = psutil.Process(popen.pid)
    _write_pid(pid_file(settings, name), proc)
    return proc


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # services lead their own group (start_new_session)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_pid(pid: int, *, timeout: float = 10.0, second_term_after: float | None = None) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left (tree included)."""
    try:
        root = psutil.Process(pid)
        # Children that moved to their own session escape killpg: remember them now.
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    _signal_group(pid, signal.SIGTERM)
    if second_term_after is not None:
        # A Prefect worker treats the first SIGTERM as "finish up" and only exits on the
        # second one.
        _, alive = psutil.wait_procs([root], timeout=second_term_after)
        if alive:
            _signal_group(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    if alive:
        _signal_group(pid, signal.SIGKILL)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)


# --------------------------------------------------------------------------------------
# health checks
# --------------------------------------------------------------------------------------


def wait_for_http(url: str, timeout: float, *, interval: float = 0.25) -> None:
    """Poll `url` until it answers 2xx; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = httpx.get(url, timeout=2.0)
            if response.is_success:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s ({last})")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False


def mongo_ping(url: str, timeout: float = 1.0) -> bool:
    import pymongo  # imported lazily: `leadflow status` of other services should not pay

    client: pymongo.MongoClient = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000)
    )
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def _wait_until(
    settings: Settings,
    name: str,
    proc: psutil.Process,
    check: Callable[[], bool],
    timeout: float,
) -> None:
    """Wait for `check()`; on death or time-out stop the process and raise with its log."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            reason = "exited during start-up"
            break
        if time.monotonic() >= deadline:
            reason = f"did not become healthy within {timeout:.0f}s"
            break
        time.sleep(0.25)
    stop_pid(proc.pid, timeout=5, second_term_after=1 if name == "worker" else None)
    pid_file(settings, name).unlink(missing_ok=True)
    log = log_file(settings, name)
    raise ServiceError(f"{name} {reason}; last lines of {log}:\n{tail(log)}")


def _check_port(settings: Settings, name: str, port: int, setting: str) -> None:
    if port_in_use(settings.host, port):
        raise PortInUseError(
            f"port {port} ({name}) is in use by another program; set {setting}"
            " to a free port (or stop that program)"
        )


# --------------------------------------------------------------------------------------
# environments
# --------------------------------------------------------------------------------------


def _telemetry_off(env: dict[str, str]) -> None:
    # Telemetry otherwise tries DNS on an offline machine and logs an error per process.
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DO_NOT_TRACK"] = "1"


def prefect_env(settings: Settings) -> dict[str, str]:
    """Env vars for any process that talks to the Prefect server of these settings."""
    env = {"PREFECT_API_URL": settings.prefect_api}
    _telemetry_off(env)
    if not settings.prefect_api_url:
        # Local server: keep Prefect's profiles/result storage under LEADFLOW_HOME instead
        # of ~/.prefect, so two homes (e.g. tests) never share state.
        env["PREFECT_HOME"] = str(settings.home_dir / "prefect")
    return env


def settings_env(settings: Settings) -> dict[str, str]:
    """These settings as LEADFLOW_* vars, so a child process rebuilds the same Settings.

    The settings object may have been built in Python (tests) rather than from the
    environment, so passing os.environ through is not enough.
    """
    import json

    from pydantic import SecretStr

    env: dict[str, str] = {}
    for field in type(settings).model_fields:
        value = getattr(settings, field)
        key = f"LEADFLOW_{field.upper()}"
        if value is None:
            continue
        if isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        elif isinstance(value, Path):
            env[key] = str(value.expanduser().resolve())
        elif isinstance(value, str | int | float):
            env[key] = str(value)
        else:
            env[key] = json.dumps(value, default=str)
    return env


def child_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # Unset LEADFLOW_* (e.g. MONGODB_URI) must stay unset in the child.
        if not key.startswith("LEADFLOW_")
    }
    env.update(settings_env(settings))
    env["LEADFLOW_PROJECT_DIR"] = str(PROJECT_DIR)
    env["PYTHONUNBUFFERED"] = "1"  # logs appear as they happen
    _telemetry_off(env)
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------------------
# the services
# --------------------------------------------------------------------------------------


def _ensure_mongo(settings: Settings, echo: Echo) -> None:
    if not settings.embedded_mongo:
        if not mongo_ping(settings.mongo_url, timeout=5):
            raise ServiceError(f"MongoDB at {mask_url(settings.mongo_url)} does not answer ping")
        echo(f"mongo    external  {mask_url(settings.mongo_url)}")
        return
    if (pid := read_pid(settings, "mongo")) is not None:
        proc = psutil.Process(pid)
        _wait_until(
            settings,
            "mongo",
            proc,
            lambda: mongo_ping(settings.mongo_url),
            settings.service_start_timeout,
        )
        return
    _check_port(settings, "mongo", settings.mongo_port, "LEADFLOW_MONGO_PORT")
    data_dir = settings.home_dir / "mongo"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        venv_bin("nx-27017"),
        "--host", settings.host,
        "-p", str(settings.mongo_port),
        "--data-dir", str(data_dir),
        # nx-27017 also logs to stdout, which goes to logs/mongo.log; its own log file and
        # pid file stay inside its data dir so they do not clash with ours.
        "--pid-file", str(data_dir / "nx-27017.pid"),
        "--log-file", str(data_dir / "nx-27017.log"),
    ]  # fmt: skip
    proc = _spawn(settings, "mongo", cmd, child_env(settings), settings.home_dir)
    _wait_until(
        settings,
        "mongo",
        proc,
        lambda: mongo_ping(settings.mongo_url),
        settings.service_start_timeout,
    )
    echo(f"mongo    started   {settings.mongo_url}")


def _prefect_health_url(settings: Settings) -> str:
    return f"{settings.prefect_api.rstrip('/')}/health"


def _ensure_prefect(settings: Settings, echo: Echo) -> None:
    health = _prefect_health_url(settings)
    if settings.prefect_api_url:
        try:
            wait_for_http(health, timeout=min(10.0, settings.service_start_timeout))
        except TimeoutError as exc:
            raise ServiceError(
                f"external Prefect API {settings.prefect_api} is down: {exc}"
            ) from None
        echo(f"prefect  external  {settings.prefect_ui}")
        return
    if (pid := read_pid(settings, "prefect")) is not None:
        _wait_until(
            settings,
            "prefect",
            psutil.Process(pid),
            lambda: http_ok(health),
            settings.service_start_timeout,
        )
        return
    _check_port(settings, "prefect", settings.prefect_port, "LEADFLOW_PREFECT_PORT")
    prefect_home = settings.home_dir / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = child_env(
        settings,
        {
            **prefect_env(settings),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home}/prefect.db",
            "PREFECT_UI_API_URL": settings.prefect_api,
            "PREFECT_SERVER_API_HOST": settings.host,
            "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        },
    )
    cmd = [venv_bin("prefect"), "server", "start",
           "--host", settings.host, "--port", str(settings.prefect_port)]  # fmt: skip
    proc = _spawn(settings, "prefect", cmd, env, settings.home_dir)
    _wait_until(settings, "prefect", proc, lambda: http_ok(health), settings.service_start_timeout)
    echo(f"prefect  started   {settings.prefect_ui}")


def sandbox_command(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "sandbox",
        "--host", settings.host,
        "--port", str(settings.sandbox_port),
        "--seed", str(settings.sandbox_seed),
        "--businesses", str(settings.sandbox_businesses),
        "--latency-ms", str(settings.sandbox_latency_ms),
        "--data-dir", str(settings.home_dir / "sandbox"),
    ]  # fmt: skip


def _ensure_sandbox(settings: Settings, echo: Echo) -> None:
    health = f"{settings.sandbox_url}/health"
    if (pid := read_pid(settings, "sandbox")) is not None:
        _wait_until(
            settings,
            "sandbox",
            psutil.Process(pid),
            lambda: http_ok(health),
            settings.service_start_timeout,
        )
        return
    _check_port(settings, "sandbox", settings.sandbox_port, "LEADFLOW_SANDBOX_PORT")
    (settings.home_dir / "sandbox").mkdir(parents=True, exist_ok=True)
    proc = _spawn(settings, "sandbox", sandbox_command(settings), child_env(settings), PROJECT_DIR)
    _wait_until(settings, "sandbox", proc, lambda: http_ok(health), settings.service_start_timeout)
    echo(f"sandbox  started   {settings.sandbox_url}")


def worker_name(settings: Settings) -> str:
    # A fixed name per pool: a restarted worker reuses its record instead of leaving a
    # trail of OFFLINE "ProcessWorker <uuid>" entries in the UI.
    return f"leadflow-{socket.gethostname()}"


def worker_online(settings: Settings, *, since: float | None = None) -> bool:
    """True when our worker shows as ONLINE in the pool (heartbeat after `since`, epoch s)."""
    from prefect.client.schemas.objects import WorkerStatus

    from leadflow.prefect_setup import client_for

    try:
        with client_for(settings) as client:
            workers = client.read_workers_for_work_pool(settings.work_pool)
    except Exception:  # any API error (server starting, pool missing) means "not online"
        return False
    for worker in workers:
        if worker.name != worker_name(settings) or worker.status != WorkerStatus.ONLINE:
            continue
        beat = worker.last_heartbeat_time
        if since is None or (beat is not None and beat.timestamp() >= since - 1):
            return True
    return False


def _worker_env(settings: Settings) -> dict[str, str]:
    return child_env(
        settings,
        {
            **prefect_env(settings),
            # Flow runs send heartbeats so the zombie automation can crash dead runs.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.heartbeat_seconds),
            "PREFECT_WORKER_QUERY_SECONDS": os.environ.get(
                "PREFECT_WORKER_QUERY_SECONDS", DEFAULT_WORKER_QUERY_SECONDS
            ),
        },
    )


def _ensure_worker(settings: Settings, echo: Echo) -> None:
    if read_pid(settings, "worker") is not None:
        return
    cmd = [venv_bin("prefect"), "worker", "start",
           "--pool", settings.work_pool, "--type", "process",
           "--name", worker_name(settings)]  # fmt: skip
    started = time.time()
    proc = _spawn(settings, "worker", cmd, _worker_env(settings), PROJECT_DIR)
    _wait_until(
        settings,
        "worker",
        proc,
        lambda: worker_online(settings, since=started),
        settings.service_start_timeout,
    )
    echo(f"worker   started   pool {settings.work_pool}")


def _mail_wanted(settings: Settings) -> bool:
    """A local SMTP server in sandbox mode, when no server of one's own is configured."""
    return settings.sandbox and settings.smtp_host is None


def _ensure_mail(settings: Settings, echo: Echo) -> None:
    if not _mail_wanted(settings) or read_pid(settings, "mail") is not None:
        return
    _check_port(settings, "mail", settings.smtp_port, "LEADFLOW_SMTP_PORT")
    # aiosmtpd keeps every message in a Maildir (it creates the folder): alerts and reports
    # of `make demo` can be read there.
    maildir = settings.home_dir / "mail"
    cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{settings.host}:{settings.smtp_port}",
           "-c", "aiosmtpd.handlers.Mailbox", str(maildir)]  # fmt: skip
    proc = _spawn(settings, "mail", cmd, child_env(settings), PROJECT_DIR)
    _wait_until(
        settings,
        "mail",
        proc,
        lambda: port_in_use(settings.host, settings.smtp_port),
        settings.service_start_timeout,
    )
    echo(f"mail     started   smtp://{settings.host}:{settings.smtp_port} (Maildir {maildir})")


def _ensure_api(settings: Settings, echo: Echo) -> None:
    health = f"{settings.api_url}/health"
    if (pid := read_pid(settings, "api")) is not None:
        _wait_until(
            settings,
            "api",
            psutil.Process(pid),
            lambda: http_ok(health),
            settings.service_start_timeout,
        )
        return
    _check_port(settings, "api", settings.api_port, "LEADFLOW_API_PORT")
    cmd = [sys.executable, "-m", "api", "--host", settings.host, "--port", str(settings.api_port)]
    proc = _spawn(settings, "api", cmd, child_env(settings, prefect_env(settings)), PROJECT_DIR)
    _wait_until(settings, "api", proc, lambda: http_ok(health), settings.service_start_timeout)
    echo(f"api      started   {settings.api_url} (docs {settings.api_url}/docs)")


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def up(settings: Settings, *, echo: Echo | None = None) -> None:
    """Start every service that is not running yet and set up Prefect; idempotent."""
    from leadflow import prefect_setup  # imports prefect: only needed from here on

    say: Echo = echo or (lambda _msg: None)
    for directory in (settings.home_dir, run_dir(settings), settings.logs_dir):
        directory.mkdir(parents=True, exist_ok=True)
    _ensure_mongo(settings, say)
    _ensure_prefect(settings, say)
    _ensure_sandbox(settings, say)
    _ensure_mail(settings, say)
    prefect_setup.setup(settings, echo=say)
    _ensure_worker(settings, say)
    _ensure_api(settings, say)


def stop(settings: Settings, name: str) -> bool:
    """Stop one service; True if it was running."""
    pid = read_pid(settings, name)
    if pid is None:
        return False
    stop_pid(pid, second_term_after=2.0 if name == "worker" else None)
    pid_file(settings, name).unlink(missing_ok=True)
    return True


def down(settings: Settings, *, echo: Echo | None = None) -> None:
    """Stop every service we started (external ones are left alone)."""
    say: Echo = echo or (lambda _msg: None)
    for name in reversed(SERVICE_NAMES):
        if stop(settings, name):
            say(f"{name:<8} stopped")


def status(settings: Settings) -> list[ServiceStatus]:
    """One entry per service, in start order."""
    result: list[ServiceStatus] = []

    if settings.embedded_mongo:
        pid = read_pid(settings, "mongo")
        up_ = pid is not None and mongo_ping(settings.mongo_url)
        result.append(ServiceStatus("mongo", up_, settings.mongo_url, pid))
    else:
        result.append(
            ServiceStatus(
                "mongo",
                mongo_ping(settings.mongo_url, timeout=3),
                mask_url(settings.mongo_url),
                managed=False,
            )
        )

    prefect_up = http_ok(_prefect_health_url(settings))
    if settings.prefect_api_url:
        result.append(ServiceStatus("prefect", prefect_up, settings.prefect_ui, managed=False))
    else:
        pid = read_pid(settings, "prefect")
        result.append(
            ServiceStatus("prefect", pid is not None and prefect_up, settings.prefect_ui, pid)
        )

    pid = read_pid(settings, "sandbox")
    sandbox_up = pid is not None and http_ok(f"{settings.sandbox_url}/health")
    result.append(ServiceStatus("sandbox", sandbox_up, settings.sandbox_url, pid))

    if _mail_wanted(settings):
        pid = read_pid(settings, "mail")
        mail_up = pid is not None and port_in_use(settings.host, settings.smtp_port)
        result.append(
            ServiceStatus("mail", mail_up, f"smtp://{settings.host}:{settings.smtp_port}", pid)
        )

    pid = read_pid(settings, "worker")
    # The process alone is the cheap answer; ONLINE in the pool is the real one.
    worker_up = pid is not None and prefect_up and worker_online(settings)
    result.append(ServiceStatus("worker", worker_up, f"pool {settings.work_pool}", pid))

    pid = read_pid(settings, "api")
    api_up = pid is not None and http_ok(f"{settings.api_url}/health")
    result.append(ServiceStatus("api", api_up, settings.api_url, pid))
    return result

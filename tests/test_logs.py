"""Logging: JSON lines with the request id, an error log of errors only, time rotation (one
second here), one file set per instance, redaction of keys, tokens and secret settings, and
stdout mode."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leadflow.logs import (
    REDACTED,
    RedactSecrets,
    accept_request_id,
    configure_logging,
    log_paths,
    request_id_var,
    reset_logging,
)
from leadflow.settings import Settings

log = logging.getLogger("leadflow.test_logs")
API_KEY = "lf_0123456789ab_Zx9-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_abcd"
SECRET_PART = API_KEY.split("_", 2)[2]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    # Tests set request ids in their own context; none may leak into the next test.
    token = request_id_var.set(None)
    yield
    request_id_var.reset(token)
    reset_logging()
    root.setLevel(level)


def settings_for(home: Path, **values: Any) -> Settings:
    return Settings(home=home, **values)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def rotated(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".*"))


def test_every_line_is_json_with_the_request_id_and_instance(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    configure_logging(settings, "api-1")
    log.info("outside any request")

    async def handle(request_id: str) -> None:
        request_id_var.set(request_id)  # each task runs in its own copy of the context
        await asyncio.sleep(0.01)
        log.info("handling %s", request_id)

    async def serve() -> None:
        await asyncio.gather(handle("req-a"), handle("req-b"))

    asyncio.run(serve())
    log.info("explicit", extra={"request_id": "from-a-job"})
    reset_logging()

    app_log, _ = log_paths(settings, "api-1")
    assert app_log == tmp_path / "logs" / "app-api-1.log"
    lines = read_lines(app_log)
    assert [(line["message"], line["request_id"]) for line in lines] == [
        ("outside any request", None),
        ("handling req-a", "req-a"),
        ("handling req-b", "req-b"),
        ("explicit", "from-a-job"),
    ]
    assert {line["instance"] for line in lines} == {"api-1"}
    assert {line["logger"] for line in lines} == {"leadflow.test_logs"}
    assert all(line["level"] == "INFO" and line["timestamp"] for line in lines)


def test_the_error_log_holds_only_errors(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    configure_logging(settings, "one")
    log.debug("debug")
    log.info("info")
    log.warning("warning")
    log.error("error")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("exception")
    log.critical("critical")
    reset_logging()

    app_log, error_log = log_paths(settings, "one")
    assert [line["message"] for line in read_lines(app_log)] == [
        "info",
        "warning",
        "error",
        "exception",
        "critical",
    ]
    errors = read_lines(error_log)
    assert [(line["message"], line["level"]) for line in errors] == [
        ("error", "ERROR"),
        ("exception", "ERROR"),
        ("critical", "CRITICAL"),
    ]
    assert "ZeroDivisionError" in errors[1]["exc_info"]


def test_files_rotate_on_time_and_only_backup_count_are_kept(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, log_rotate_when="S", log_rotate_interval=1, log_backup_count=1
    )
    configure_logging(settings, "rot")
    app_log, _ = log_paths(settings, "rot")
    log.info("first")
    time.sleep(1.1)
    log.info("second")
    assert rotated(app_log), "no rotation after a one-second interval"
    time.sleep(1.1)
    log.info("third")
    reset_logging()

    old = rotated(app_log)
    assert len(old) == 1, old  # backupCount=1: "first" has been deleted
    assert [line["message"] for line in read_lines(old[0])] == ["second"]
    assert [line["message"] for line in read_lines(app_log)] == ["third"]


CHILD = textwrap.dedent(
    """
    import logging, sys, time
    from leadflow.logs import configure_logging, reset_logging
    from leadflow.settings import Settings

    configure_logging(Settings(), sys.argv[1])
    for n in range(40):
        logging.getLogger("child").info("line %d", n)
        time.sleep(0.04)
    reset_logging()
    """
)


def test_two_instances_write_and_rotate_their_own_files(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LEADFLOW_HOME": str(tmp_path),
        "LEADFLOW_LOG_ROTATE_WHEN": "S",
        "LEADFLOW_LOG_ROTATE_INTERVAL": "1",
    }
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, name], env=env, stderr=subprocess.PIPE)
        for name in ("api-a", "api-b")
    ]
    for child in children:
        _, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, stderr.decode()

    logs = tmp_path / "logs"
    for name in ("api-a", "api-b"):
        current = logs / f"app-{name}.log"
        files = [current, *rotated(current)]
        assert len(files) >= 2, f"{name} did not rotate over ~1.6 s"
        lines = [line for path in files for line in read_lines(path)]
        # Every line of this instance, in its own files only: nothing lost, nothing mixed.
        assert sorted(line["message"] for line in lines) == sorted(f"line {n}" for n in range(40))
        assert {line["instance"] for line in lines} == {name}
    assert not list(logs.glob("error-*.log.*"))  # nothing was written there, so no rotation


def test_keys_tokens_and_secret_settings_are_redacted(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        mongodb_uri="mongodb+srv://leadflow:Pa55-word-xyz@cluster0.example.net/leads",
        hunter_api_key="hunter-live-0a1b2c3d",
        company_api_key="company-live-9z8y7x",
        captcha_api_key="2captcha-live-5555",
    )
    # uvicorn installs plain-text handlers of its own; configure_logging takes their records
    # over, so none goes out unredacted or without its request id.
    access = logging.getLogger("uvicorn.access")
    uvicorn_own = io.StringIO()
    access.addHandler(logging.StreamHandler(uvicorn_own))
    access.propagate = False
    configure_logging(settings, "red")
    request_id_var.set("req-red")
    log.info("client key %s", API_KEY)
    log.info(
        "headers %s",
        {"Authorization": "Bearer eyJhbGciOi.eyJzdWIi.sig-nature", "X-API-Key": "not-a-key-format"},
    )
    log.info(
        "upstream",
        extra={
            "asgi_headers": [(b"authorization", b"Bearer tok-123456"), (b"x-api-key", b"raw-val")],
            "provider": {"hunter_api_key": "hunter-live-0a1b2c3d", "domain": "acme.test"},
        },
    )
    log.warning(
        "GET https://api.hunter.io/v2/domain-search?domain=acme.test&api_key=hunter-live-0a1b2c3d"
    )
    log.info("company %s captcha %s", "company-live-9z8y7x", "2captcha-live-5555")
    try:
        raise ConnectionError("auth failed for mongodb+srv://leadflow:Pa55-word-xyz@cluster0")
    except ConnectionError:
        log.exception("MongoDB down; Authorization: Basic dXNlcjpwYXNzd29yZA==")
    access.info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/leads?key={API_KEY}", "1.1", 200
    )
    reset_logging()

    app_log, error_log = log_paths(settings, "red")
    text = app_log.read_text(encoding="utf-8") + error_log.read_text(encoding="utf-8")
    for secret in (
        SECRET_PART,
        "eyJhbGciOi",
        "not-a-key-format",
        "tok-123456",
        "raw-val",
        "hunter-live-0a1b2c3d",
        "company-live-9z8y7x",
        "2captcha-live-5555",
        "Pa55-word-xyz",
        "dXNlcjpwYXNzd29yZA",
    ):
        assert secret not in text, secret
    lines = read_lines(app_log)
    assert lines[0]["message"] == f"client key lf_0123456789ab_{REDACTED}"  # the id stays
    assert lines[1]["message"] == (
        f"headers {{'Authorization': 'Bearer {REDACTED}', 'X-API-Key': '{REDACTED}'}}"
    )
    assert lines[2]["provider"] == {"hunter_api_key": REDACTED, "domain": "acme.test"}
    assert "domain=acme.test" in lines[3]["message"]
    assert lines[-1]["logger"] == "uvicorn.access" and lines[-1]["request_id"] == "req-red"
    assert f"/leads?key=lf_0123456789ab_{REDACTED}" in lines[-1]["message"]
    assert uvicorn_own.getvalue() == ""
    assert all(line["request_id"] == "req-red" for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {API_KEY}", f"Authorization: Bearer {REDACTED}"),
        (f"x-api-key={API_KEY}&page=2", f"x-api-key={REDACTED}&page=2"),
        ('{"password": "hunter2", "user": "bob"}', f'{{"password": "{REDACTED}", "user": "bob"}}'),
        ("postgresql://app:s3cr3t@db:5432/prefect", f"postgresql://app:{REDACTED}@db:5432/prefect"),
        (f"(b'authorization', b'Bearer {API_KEY}')", f"(b'authorization', b'Bearer {REDACTED}')"),
        ("bearer abc.def-ghi", f"bearer {REDACTED}"),
        # Ordinary text keeps its words.
        ("the Authorization header is missing", "the Authorization header is missing"),
        (
            "basic settings loaded; 3 secrets configured",
            "basic settings loaded; 3 secrets configured",
        ),
        ("lead lf-like name, self_lf_x", "lead lf-like name, self_lf_x"),
    ],
)
def test_redaction_patterns(text: str, expected: str) -> None:
    assert RedactSecrets().redact(text) == expected


def test_stdout_mode_writes_json_lines_and_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEADFLOW_LOG_STDOUT", "1")
    settings = settings_for(tmp_path)
    assert settings.log_stdout
    configure_logging(settings, "box")
    request_id_var.set("req-out")
    log.info("to stdout with %s", API_KEY)
    log.error("an error")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["message"], line["request_id"], line["instance"]) for line in lines] == [
        (f"to stdout with lf_0123456789ab_{REDACTED}", "req-out", "box"),
        ("an error", "req-out", "box"),  # once: stdout mode has no separate error stream
    ]
    assert not (tmp_path / "logs").exists()


def test_configuring_twice_replaces_the_handlers(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    configure_logging(settings, "twice")
    configure_logging(settings, "twice")
    configure_logging(settings_for(tmp_path, log_level="WARNING"), "twice")
    log.info("dropped at WARNING")
    log.warning("once")
    reset_logging()
    app_log, _ = log_paths(settings, "twice")
    assert [line["message"] for line in read_lines(app_log)] == ["once"]


def test_instance_names_must_be_safe_file_name_parts(tmp_path: Path) -> None:
    for bad in ("", "../etc", "a/b", "api 1", "-x"):
        with pytest.raises(ValueError, match="instance name"):
            configure_logging(settings_for(tmp_path), bad)
    assert not (tmp_path / "logs").exists()


def test_a_client_request_id_is_kept_only_when_it_looks_like_one() -> None:
    assert accept_request_id("req-1.2:3_4") == "req-1.2:3_4"
    for bad in (None, "", "two\nlines", "x" * 129, "<script>", " lead"):
        fresh = accept_request_id(bad)
        assert len(fresh) == 32 and int(fresh, 16) >= 0
    assert accept_request_id(None) != accept_request_id(None)

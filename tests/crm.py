"""What the CRM tests (and bench/sync.py) share: synthetic leads to sync and the sandboxes'
`__sandbox` control and truth routes. Importing it sets up nothing (unlike conftest.py)."""

from __future__ import annotations

from typing import Any

import httpx

from models.lead import Address, Lead, Score


def make_leads(n: int, prefix: str) -> list[Lead]:
    """`n` stored-looking leads with ids `prefix00000`...; a third have no email."""
    return [
        Lead(
            lead_id=f"{prefix}{i:05d}",
            name=f"{prefix} Dental {i}",
            category="dentist",
            address=Address(
                street=f"{i} Main St", city="Austin", state="TX", postal_code="78701", country="US"
            ),
            phone=f"+1512555{i:04d}",
            website=f"http://dental{i}.test",
            domain=f"dental{i}.test",
            best_email=f"office@dental{i}.test" if i % 3 else None,
            score=Score(
                value=float(i % 100), reasons=["phone number"], model_version="heuristic-1"
            ),
        )
        for i in range(n)
    ]


def no_faults(timeout_seconds: float | None = 30) -> dict[str, float]:
    """Sandbox knobs that switch every injected fault off; `timeout_seconds` is how long a
    "timeout" fault holds a request, should a test switch timeouts on again (None: leave the
    sandbox's setting)."""
    knobs: dict[str, float] = {
        "error_share": 0,
        "throttle_share": 0,
        "timeout_share": 0,
        "lost_response_share": 0,
    }
    if timeout_seconds is not None:
        knobs["timeout_seconds"] = timeout_seconds
    return knobs


def control(base: str, http: httpx.Client | None = None, **knobs: Any) -> dict[str, Any]:
    """Set a CRM sandbox's knobs (rate limits, faults, reset) at `base`; its state after."""
    post = http.post if http is not None else httpx.post
    answer = post(f"{base}/__sandbox/state", json=knobs, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def truth(base: str, kind: str | None = None) -> Any:
    """What a CRM sandbox holds: every kind, or one kind's count, duplicates and records."""
    params = {"kind": kind} if kind else None
    answer = httpx.get(f"{base}/__sandbox/truth", params=params, timeout=30).json()
    return answer[kind] if kind else answer

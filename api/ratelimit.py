"""Rate limits: slowapi's `Limiter` holds the storage (memory:// or redis://, so instances
can share counters) and the moving-window strategy; `RateLimits.check` applies the three
kinds of limit this API has to one request:

- per client IP (`LEADFLOW_RATE_LIMIT_PER_IP`), counted even when the key is missing or wrong,
  so keys cannot be guessed at full speed;
- per API key (`LEADFLOW_RATE_LIMIT_PER_KEY`);
- per API key and route, for the expensive routes (`POST /runs`, `GET /export`).

Keys with the `ratelimit:exempt` scope (granted only from the CLI) skip all three. Answers
of the rate-limited routes carry `X-RateLimit-Limit/-Remaining/-Reset` of the tightest
limit; a 429 also carries `Retry-After` in seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from slowapi import Limiter
from starlette.requests import Request

from leadflow.settings import Settings


def client_ip(request: Request) -> str:
    # The peer address. `python -m api` ignores X-Forwarded-For unless the peer is one of
    # LEADFLOW_API_TRUSTED_PROXIES, so a client cannot pick a new "IP" per request.
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True, slots=True)
class LimitState:
    limit: RateLimitItem
    remaining: int
    reset_at: float  # epoch seconds

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit.amount),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }

    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))


class RateLimited(Exception):
    def __init__(self, state: LimitState, what: str) -> None:
        super().__init__(f"Rate limit of {state.limit} {what} exceeded.")
        self.state = state


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.limiter = Limiter(
            key_func=client_ip,
            storage_uri=settings.rate_limit_storage,
            strategy="moving-window",
            key_prefix="leadflow",
            headers_enabled=True,
        )
        self.per_ip = parse(settings.rate_limit_per_ip)
        self.per_key = parse(settings.rate_limit_per_key)
        self.route_limits = {
            "runs:create": parse(settings.rate_limit_runs),
            "export": parse(settings.rate_limit_export),
        }

    def _hit(self, limit: RateLimitItem, *identifiers: str) -> LimitState:
        strategy = self.limiter.limiter
        allowed = strategy.hit(limit, *identifiers)
        reset_at, remaining = strategy.get_window_stats(limit, *identifiers)
        state = LimitState(limit, remaining, reset_at)
        if not allowed:
            raise RateLimited(state, "per " + identifiers[0])
        return state

    def check_ip(self, request: Request) -> LimitState:
        return self._hit(self.per_ip, "ip", client_ip(request))

    def check_key(self, key_id: str, route: str | None) -> list[LimitState]:
        states = [self._hit(self.per_key, "key", key_id)]
        if route is not None:
            states.append(self._hit(self.route_limits[route], route, key_id))
        return states

    def ping(self) -> bool:
        return bool(self.limiter._storage.check())

"""`python -m api [--host H] [--port P] [--instance NAME]`: one API instance under uvicorn."""

from __future__ import annotations

import argparse
import os

import uvicorn


def main(argv: list[str] | None = None) -> None:
    from leadflow.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--instance", default=settings.api_instance, help="log file name part")
    args = parser.parse_args(argv)
    os.environ["LEADFLOW_API_INSTANCE"] = args.instance
    get_settings.cache_clear()
    # log_config=None: our JSON handlers (configured at start-up) take uvicorn's records too.
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        # X-Forwarded-For decides the client IP of the per-IP rate limit: believe it only
        # from the proxies named in the settings.
        proxy_headers=bool(settings.api_trusted_proxies),
        forwarded_allow_ips=settings.api_trusted_proxies or "",
    )


if __name__ == "__main__":
    main()

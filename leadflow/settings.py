"""All of Leadflow's configuration: one pydantic-settings class, env prefix ``LEADFLOW_``.

This module imports nothing of ours, so every package may import it. Every external base
URL, poll interval, back-off, time-out and sandbox limit lives here so tests can shrink them
and production can point them at real services. `.env.example` documents each one.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The API keys the sandbox's stand-ins accept (local only, not secrets); used when no key is
# configured in sandbox mode.
SANDBOX_CAPTCHA_KEY = "sandbox-2captcha-key"
SANDBOX_HUNTER_KEY = "sandbox-hunter-key"
SANDBOX_COMPANY_KEY = "sandbox-company-key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEADFLOW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- where things live ---------------------------------------------------------------
    home: Path = Field(
        Path(".leadflow"), description="Run files, trained models, logs, embedded data."
    )
    sandbox: bool = Field(True, description="Point every external service at the local sandbox.")

    # --- MongoDB -------------------------------------------------------------------------
    mongodb_uri: SecretStr | None = Field(
        None, description="MongoDB connection string; unset = the embedded MongoDB-wire server."
    )
    mongodb_db: str = "leadflow"
    mongo_port: int = Field(27017, description="Port of the embedded MongoDB-wire server.")

    # --- local services ------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface the local services bind to.")
    prefect_port: int = 4200
    prefect_api_url: str | None = Field(
        None, description="An external Prefect API; unset = the local server `leadflow up` starts."
    )
    work_pool: str = "leadflow-process"
    sandbox_port: int = Field(
        8800, description="Sandbox web server, also the crawlers' HTTP proxy."
    )
    service_start_timeout: float = Field(
        60.0, description="Seconds to wait for a service to answer."
    )

    # --- the sandbox ---------------------------------------------------------------------
    sandbox_seed: int = 42
    sandbox_businesses: int = 500
    sandbox_latency_ms: int = Field(0, description="Extra latency per sandbox response.")
    directory_url: str = Field(
        "http://directory.test", description="Base URL of the business directory the spider crawls."
    )
    proxy_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated proxies to rotate (http://, https://; socks5:// for the "
        "browser path only); empty = none, or the sandbox server in sandbox mode.",
    )
    proxy_max_failures: int = Field(3, description="Failures in a row that cool a proxy down.")
    proxy_cooldown: float = Field(60.0, description="Seconds a failing proxy is left out.")

    # --- crawling ------------------------------------------------------------------------
    crawl_timeout: float = Field(900.0, description="Hard limit (s) for one crawl subprocess.")
    crawl_concurrency: int = Field(16, description="Scrapy CONCURRENT_REQUESTS.")
    crawl_concurrency_per_domain: int = 8
    crawl_download_timeout: float = 30.0
    crawl_download_delay: float = Field(
        0.0, description="Minimum seconds between requests to one site."
    )
    crawl_retry_times: int = 2
    crawl_retry_backoff: float = Field(
        1.0, description="First retry delay (s) after a 429/5xx; doubles per retry."
    )
    crawl_retry_backoff_max: float = Field(60.0, description="Longest retry delay (s).")
    crawl_obey_robots: bool = True
    autothrottle_start_delay: float = 0.25
    autothrottle_max_delay: float = 10.0
    autothrottle_target_concurrency: float = 8.0
    user_agent: str = "LeadflowBot/0.1 (+https://github.com/leadflow/leadflow)"

    # --- pipeline ------------------------------------------------------------------------
    default_region: str = Field("US", description="Phone region when a lead has no country.")
    load_batch_size: int = Field(1000, description="Leads per MongoDB bulk_write round trip.")
    normalize_workers: int = Field(
        0,
        ge=0,
        description="Processes that normalise a large crawl feed (0 = one per CPU core, 1 = none).",
    )
    task_retries: int = 2
    task_retry_delay: float = Field(10.0, description="Seconds between task retries.")
    run_poll_interval: float = Field(1.0, description="How often `leadflow run` polls its run.")
    heartbeat_seconds: int = Field(
        30, description="Flow-run heartbeat interval (Prefect floor: 30)."
    )
    zombie_after_seconds: int = Field(
        90, description="Missing heartbeats for this long mark a running flow run Crashed."
    )

    # --- dedup ---------------------------------------------------------------------------
    dedup_match_threshold: float = Field(
        0.80, description="Match score (0-1) that merges two leads."
    )

    # --- website contacts ----------------------------------------------------------------
    contacts_max_pages_per_site: int = Field(
        4, ge=1, description="Pages fetched per business website: home + contact-like pages."
    )
    contacts_site_time_limit: float = Field(
        20.0, gt=0, description="Seconds per website before its remaining requests are dropped."
    )
    contacts_crawl_timeout: float = Field(
        600.0, gt=0, description="Hard limit (s) for the whole website-contacts crawl subprocess."
    )

    # --- Google Maps ----------------------------------------------------------------------
    google_maps_url: str = Field(
        "http://maps.test", description="Base URL of the Google Maps site the spider searches."
    )
    google_maps_mode: Literal["browser", "fast"] = Field(
        "browser",
        description="browser = Chromium scrolls the result feed; fast = read the search "
        "payloads over plain HTTP (no browser).",
    )
    chromium_path: str = Field("/usr/bin/chromium", description="Chromium for the browser path.")
    browser_contexts: int = Field(
        2, ge=1, description="Browser contexts (PLAYWRIGHT_MAX_CONTEXTS)."
    )
    browser_pages_per_context: int = Field(
        4, ge=1, description="Open pages per context (PLAYWRIGHT_MAX_PAGES_PER_CONTEXT)."
    )
    google_maps_grid_max_depth: int = Field(
        8,
        ge=0,
        description="How often a search area may be split into quadrants; only cells with more "
        "than one result list (120) split, so dense cities go deep and empty areas do not.",
    )
    google_maps_scroll_timeout: float = Field(
        20.0, gt=0, description="Seconds to wait for the result feed to grow after one scroll."
    )
    captcha_enabled: bool = Field(
        True, description="Solve CAPTCHAs with 2captcha (balance checked before a scrape)."
    )

    google_maps_probe_concurrency: int = Field(
        8,
        ge=1,
        description="Grid probes (cell-size searches) in flight at once, in their own download "
        "slot without AutoThrottle's spacing.",
    )

    # --- CAPTCHA (2captcha) --------------------------------------------------------------
    captcha_url: str | None = Field(
        None,
        description="2captcha API base URL; unset = <sandbox_url>/2captcha in sandbox mode, "
        "else https://2captcha.com.",
    )
    captcha_api_key: SecretStr | None = Field(
        None, description="2captcha API key; unset in sandbox mode = SANDBOX_CAPTCHA_KEY."
    )
    captcha_poll_interval: float = Field(
        5.0, description="Seconds between res.php polls (2captcha asks for at least 5)."
    )
    captcha_solve_timeout: float = Field(
        180.0, description="Give up on one CAPTCHA after this many seconds."
    )
    captcha_min_balance: float = Field(
        0.10, description="A scrape that may meet CAPTCHAs refuses to start below this ($)."
    )
    captcha_max_attempts: int = Field(
        3, description="Tokens tried per challenge before giving up (rejected or unsolvable)."
    )
    captcha_no_slot_backoff: float = Field(
        5.0, description="Seconds to wait after ERROR_NO_SLOT_AVAILABLE (2captcha asks for 5)."
    )
    captcha_cost_per_solve: float = Field(
        0.00299, description="Price ($) of one reCAPTCHA v2 solve, for the per-run cost figure."
    )
    captcha_http_timeout: float = Field(30.0, description="Time-out (s) of one 2captcha request.")
    sandbox_captcha_balance: float = Field(
        10.0, description="Starting balance ($) per sandbox key."
    )
    sandbox_captcha_solve_seconds: float = Field(
        1.0, description="How long the sandbox takes to solve a CAPTCHA."
    )
    sandbox_captcha_unsolvable_share: float = Field(
        0.0, description="Share (0-1) of sandbox tasks that end ERROR_CAPTCHA_UNSOLVABLE (seeded)."
    )
    sandbox_captcha_cost: float = Field(
        0.00299, description="Price ($) the sandbox charges per task."
    )
    sandbox_captcha_token_ttl: float = Field(
        120.0, description="Seconds a sandbox-issued token stays valid (reCAPTCHA: 120)."
    )

    # --- enrichment (Hunter, company data) -------------------------------------------------
    hunter_url: str | None = Field(
        None,
        description="Hunter API base URL; unset = <sandbox_url>/hunter/v2 in sandbox mode, "
        "else https://api.hunter.io/v2.",
    )
    hunter_api_key: SecretStr | None = Field(
        None, description="Hunter API key; unset outside sandbox mode = no Hunter calls."
    )
    hunter_requests_per_second: float = Field(
        10.0, gt=0, description="Cap on Hunter calls per second (Hunter allows 15, verifier 10)."
    )
    hunter_run_search_budget: int = Field(
        200, ge=0, description="Hunter searches (paid) one pipeline run may spend."
    )
    hunter_run_verification_budget: int = Field(
        400, ge=0, description="Hunter verifications (paid) one pipeline run may spend."
    )
    hunter_verify_candidates: int = Field(
        2, ge=0, description="Best email candidates per lead sent to the verifier."
    )
    hunter_verify_max_wait: float = Field(
        20.0, description="Seconds to keep polling a verification Hunter answers 202 for."
    )
    hunter_verify_poll_interval: float = Field(
        1.0, gt=0, description="Seconds between asks for a verification Hunter answered 202 for."
    )
    hunter_timeout: float = Field(15.0, description="Time-out (s) of one Hunter request.")
    company_url: str | None = Field(
        None,
        description="Company data API base URL (Clearbit Company API shape); unset = "
        "<sandbox_url>/company in sandbox mode, else https://company.clearbit.com.",
    )
    company_api_key: SecretStr | None = Field(
        None, description="Company data API key; unset outside sandbox mode = stage skipped."
    )
    company_requests_per_second: float = Field(
        10.0, gt=0, description="Cap on company-data calls per second."
    )
    company_timeout: float = Field(15.0, description="Time-out (s) of one company-data request.")
    enrichment_cache_days: float = Field(
        30.0, gt=0, description="A domain's Hunter or company result is reused for this long."
    )
    enrichment_workers: int = Field(
        4, ge=1, description="Provider calls in flight at once (threads; the rate caps still hold)."
    )

    # --- validation ------------------------------------------------------------------------
    validation_max_failing_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of a batch's leads that may fail validation (they go to quarantine) "
        "before the whole batch fails.",
    )

    # --- the API service ---------------------------------------------------------------
    api_port: int = Field(8000, description="Port of the trigger and review API (uvicorn).")
    api_instance: str = Field(
        "api",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="This API instance's name: its log files are app-<name>.log, error-<name>.log.",
    )
    api_deployment: str = Field(
        "lead_pipeline/lead-pipeline", description="Deployment that `POST /runs` starts."
    )
    api_work_queue: str | None = Field(
        None,
        description="Work queue (of the deployment's pool) for runs the API starts; unset = the "
        "deployment's own. A paused queue takes runs without starting them (load tests).",
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where rate-limit counters live: memory:// (per instance) or "
        "redis://host:port/db (shared by every instance).",
    )
    rate_limit_per_ip: str = Field("100/minute", description="Requests per client IP.")
    rate_limit_per_key: str = Field("1000/hour", description="Requests per API key.")
    rate_limit_runs: str = Field("10/minute", description="`POST /runs` per API key.")
    rate_limit_export: str = Field("10/minute", description="`GET /export` per API key.")
    api_export_max_rows: int = Field(
        100_000, ge=1, description="Rows one `GET /export` streams at most."
    )
    api_trusted_proxies: str | None = Field(
        None,
        description="Comma-separated proxy IPs whose X-Forwarded-For is believed (the client "
        "IP of rate limits and logs); unset = none, the peer address is the client.",
    )
    api_ready_timeout: float = Field(
        2.0, gt=0, description="Seconds each `GET /health/ready` check may take."
    )
    # --- CRM sync ------------------------------------------------------------------------
    crm_mapping: Path = Field(
        PROJECT_DIR / "deployments" / "crm_mapping.yaml",
        description="The CRM field mapping (YAML), checked at start-up.",
    )
    crm_destinations: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["salesforce", "hubspot", "pipedrive"],
        description="Comma-separated CRMs to sync (of those enabled in the mapping); empty = none.",
    )
    crm_batch_size: int = Field(200, ge=1, le=200, description="Records per CRM call.")
    crm_max_attempts: int = Field(
        5, ge=1, description="Failed syncs of a lead before it is dead-lettered."
    )
    crm_retry_backoff: float = Field(
        60.0,
        ge=0,
        description="Seconds before the first retry of a failed sync; doubles each time.",
    )

    slack_webhook_url: SecretStr | None = Field(
        None,
        description="Slack incoming webhook for run notifications; unset = the sandbox's hook "
        "in sandbox mode, else none.",
    )
    slack_timeout: float = Field(10.0, gt=0, description="Seconds one Slack request may take.")
    slack_signing_secret: SecretStr | None = Field(
        None,
        description="Slack app signing secret: enables the slash commands at POST /slack/commands.",
    )

    # --- sandbox maps --------------------------------------------------------------------
    sandbox_maps_latency_ms: int = Field(
        300, ge=0, description="Delay (ms) of every response of the sandbox maps site (maps.test)."
    )
    sandbox_captcha_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share (0-1) of sandbox maps requests sent to the CAPTCHA page (seeded).",
    )
    sandbox_captcha_sitekey: str = Field(
        "6LfLeadflowSandboxMapsKey-q1r3nT0kE_4pZ9",
        description="reCAPTCHA sitekey the sandbox maps challenge page shows.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def runs_dir(self) -> Path:
        return self.home_dir / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.home_dir / "logs"

    @property
    def embedded_mongo(self) -> bool:
        return self.mongodb_uri is None

    @property
    def mongo_url(self) -> str:
        if self.mongodb_uri is not None:
            return self.mongodb_uri.get_secret_value()
        return f"mongodb://{self.host}:{self.mongo_port}/"

    @property
    def prefect_api(self) -> str:
        return self.prefect_api_url or f"http://{self.host}:{self.prefect_port}/api"

    @property
    def prefect_ui(self) -> str:
        return self.prefect_api.removesuffix("/api")

    @property
    def slack_webhook(self) -> str | None:
        if self.slack_webhook_url is not None:
            return self.slack_webhook_url.get_secret_value()
        return (
            f"{self.sandbox_url}/slack/services/T0SANDBOX/B0SANDBOX/sandbox-hook"
            if self.sandbox
            else None
        )

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.host}:{self.sandbox_port}"

    @field_validator("crm_destinations", mode="before")
    @classmethod
    def _split_destinations(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):  # child processes get lists as JSON
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("proxy_urls", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):  # also accept a JSON list
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def crawl_proxies(self) -> list[str]:
        if self.proxy_urls:
            return list(self.proxy_urls)
        return [self.sandbox_url] if self.sandbox else []

    # An external service's base URL and credential: the configured ones, else in sandbox
    # mode the local stand-in's (under `sandbox_url`), else the public service's URL and none.
    def _service_url(self, configured: str | None, sandbox_path: str, public: str) -> str:
        if configured:
            return configured.rstrip("/")
        return f"{self.sandbox_url}{sandbox_path}" if self.sandbox else public

    def _service_secret(self, configured: SecretStr | None, sandbox: str) -> SecretStr | None:
        if configured is not None:
            return configured
        return SecretStr(sandbox) if self.sandbox else None

    @property
    def captcha_base_url(self) -> str:
        return self._service_url(self.captcha_url, "/2captcha", "https://2captcha.com")

    @property
    def hunter_base_url(self) -> str:
        return self._service_url(self.hunter_url, "/hunter/v2", "https://api.hunter.io/v2")

    @property
    def hunter_key(self) -> SecretStr | None:
        return self._service_secret(self.hunter_api_key, SANDBOX_HUNTER_KEY)

    @property
    def company_base_url(self) -> str:
        return self._service_url(self.company_url, "/company", "https://company.clearbit.com")

    @property
    def company_key(self) -> SecretStr | None:
        return self._service_secret(self.company_api_key, SANDBOX_COMPANY_KEY)

    @property
    def captcha_key(self) -> SecretStr | None:
        return self._service_secret(self.captcha_api_key, SANDBOX_CAPTCHA_KEY)

    # --- sandbox Hunter and company data -------------------------------------------------
    sandbox_hunter_search_credits: int = Field(
        5000, ge=0, description="Monthly search credits of the sandbox Hunter account."
    )
    sandbox_hunter_verification_credits: int = Field(
        10000, ge=0, description="Monthly verification credits of the sandbox Hunter account."
    )
    sandbox_hunter_requests_per_second: int = Field(
        15, ge=1, description="Sandbox Hunter calls per key per second before 403 (Hunter: 15)."
    )
    sandbox_hunter_requests_per_minute: int = Field(
        500, ge=1, description="Sandbox Hunter calls per key per minute before 403 (Hunter: 500)."
    )
    sandbox_hunter_verifier_requests_per_second: int = Field(
        10, ge=1, description="Sandbox verifier calls per key per second before 403 (Hunter: 10)."
    )
    sandbox_hunter_verifier_requests_per_minute: int = Field(
        300, ge=1, description="Sandbox verifier calls per key per minute before 403 (Hunter: 300)."
    )
    sandbox_hunter_verifier_pending_seconds: float = Field(
        2.0,
        ge=0,
        description="How long the sandbox verifier answers 202 after the first check of a slow "
        "address (about 30% of business addresses; 0 = never).",
    )
    sandbox_hunter_free_repeats: bool = Field(
        False,
        description="Bill an identical sandbox Hunter request once a month, as Hunter does; off = "
        "every paid answer is billed, so a missing cache shows in /account.",
    )
    sandbox_hunter_fault_share: float = Field(
        0.0, ge=0, le=1, description="Share (0-1) of sandbox Hunter requests answered 503 (seeded)."
    )
    sandbox_company_requests_per_minute: int = Field(
        600,
        ge=1,
        description="Sandbox company lookups per key per minute before 429 (Clearbit: 600).",
    )
    sandbox_company_not_ready_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share (0-1) of sandbox company domains whose first lookup is queued (202).",
    )
    sandbox_company_not_ready_seconds: float = Field(
        2.0, ge=0, description="How long a queued sandbox company lookup answers 202."
    )
    sandbox_company_fault_share: float = Field(
        0.0, ge=0, le=1, description="Share (0-1) of sandbox company lookups answered 503 (seeded)."
    )

    # --- sandbox CRMs (Salesforce, HubSpot, Pipedrive stand-ins) --------------------------
    # Faults of every sandbox CRM (sandbox/crm_faults.py); each CRM's /__sandbox/state
    # changes its own copy while it runs.
    sandbox_crm_error_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share (0-1) of sandbox CRM API requests answered 5xx (seeded).",
    )
    sandbox_crm_throttle_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share (0-1) of sandbox CRM API requests answered with the CRM's throttling "
        "error (429; Salesforce 403 REQUEST_LIMIT_EXCEEDED), seeded.",
    )
    sandbox_crm_timeout_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share (0-1) of sandbox CRM API requests held sandbox_crm_timeout_seconds "
        "before they are processed (seeded).",
    )
    sandbox_crm_lost_response_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share (0-1) of sandbox CRM API requests processed whose answer is then lost "
        "(the connection drops), seeded.",
    )
    sandbox_crm_timeout_seconds: float = Field(
        30.0, ge=0, description="How long a sandbox CRM 'timeout' fault holds its request."
    )
    sandbox_crm_salesforce_username: str = Field(
        "leadflow@sandbox.test", description="User the sandbox Salesforce OAuth flows accept."
    )
    sandbox_crm_salesforce_password: str = Field(
        "sandbox-salesforce-password",
        description="Password of that user (local only, not a secret).",
    )
    sandbox_crm_salesforce_consumer_key: str = Field(
        "sandbox-salesforce-consumer-key",
        description="Connected-app consumer key (client_id, JWT iss) the sandbox accepts.",
    )
    sandbox_crm_salesforce_consumer_secret: str = Field(
        "sandbox-salesforce-consumer-secret",
        description="Connected-app consumer secret the sandbox accepts (local only).",
    )
    sandbox_crm_salesforce_jwt_certificate: Path | None = Field(
        None,
        description="PEM certificate (or public key) that verifies JWT bearer assertions; "
        "unset = the sandbox refuses the JWT flow.",
    )
    sandbox_crm_salesforce_instance_url: str = Field(
        "https://leadflow-sandbox.my.salesforce.com",
        description="instance_url the sandbox's token endpoint returns (its host is routed to "
        "the sandbox by connectors.salesforce.salesforce_session).",
    )
    sandbox_crm_salesforce_token_ttl: float = Field(
        7200.0, gt=0, description="Seconds a sandbox Salesforce access token stays valid."
    )
    sandbox_crm_salesforce_api_requests_per_day: int = Field(
        15000,
        ge=1,
        description="Daily API request budget of the sandbox org before 403 REQUEST_LIMIT_EXCEEDED.",
    )
    sandbox_crm_salesforce_external_id_field: str = Field(
        "Leadflow_Lead_Id__c",
        description="Unique external-id field on the sandbox Lead object (holds lead_id).",
    )
    sandbox_crm_salesforce_custom_fields: str = Field(
        "Leadflow_Score__c:double,Leadflow_Score_Reasons__c,Leadflow_Source__c,Leadflow_Category__c,Leadflow_Merged_Into__c",
        description="Other Lead custom fields of the sandbox org: Name__c[:string|double|int|boolean], "
        "comma-separated.",
    )
    sandbox_crm_salesforce_bulk_processing_seconds: float = Field(
        2.0, ge=0, description="How long a sandbox Bulk API 2.0 job stays InProgress."
    )
    sandbox_crm_hubspot_access_token: str = Field(
        "sandbox-hubspot-token",
        description="Private-app token the sandbox HubSpot accepts (local only).",
    )
    sandbox_crm_hubspot_id_property: str = Field(
        "leadflow_lead_id",
        description="Contact/company property whose values the sandbox HubSpot's truth counts "
        "duplicates of (the unique property holding lead_id; the sync creates it).",
    )
    sandbox_crm_hubspot_requests_per_ten_seconds: int = Field(
        100,
        ge=1,
        description="Sandbox HubSpot requests per rolling 10 s before 429 (HubSpot: 100, or 190 "
        "for Professional/Enterprise private apps).",
    )
    sandbox_crm_hubspot_requests_per_day: int = Field(
        250000, ge=1, description="Sandbox HubSpot requests per day before 429 (HubSpot: 250k+)."
    )
    sandbox_crm_hubspot_search_requests_per_second: int = Field(
        5,
        ge=1,
        description="Sandbox HubSpot CRM search requests per second before 429 (HubSpot: 5).",
    )
    sandbox_crm_pipedrive_api_token: str = Field(
        "sandbox-pipedrive-token",
        description="API token the sandbox Pipedrive accepts (local only).",
    )
    sandbox_crm_pipedrive_requests_per_two_seconds: int = Field(
        120,
        ge=1,
        description="Sandbox Pipedrive requests per token per 2-second window before 429 "
        "(Pipedrive: 20/40/80/120 by plan; the demo's company is on the largest).",
    )

    # --- API and logging -------------------------------------------------------------------
    log_stdout: bool = Field(
        False, description="JSON log lines to stdout instead of <home>/logs files (containers)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Lowest level written to the app log (the error log takes ERROR+)."
    )
    log_rotate_when: Literal[
        "S", "M", "H", "D", "midnight", "W0", "W1", "W2", "W3", "W4", "W5", "W6"
    ] = Field(
        "midnight",
        description="Log rotation unit (logging.handlers.TimedRotatingFileHandler `when`, UTC).",
    )
    log_rotate_interval: int = Field(
        1, ge=1, description="Rotate the log files every this many `log_rotate_when` units."
    )
    log_backup_count: int = Field(
        30, ge=0, description="Rotated log files kept per file (30 daily files = 30 days)."
    )
    api_key_last_used_seconds: float = Field(
        300.0,
        ge=0,
        description="An API key's `last_used` is written at most this often per key and process "
        "(in the background, never on the request's path).",
    )

    # --- e-mail ----------------------------------------------------------------------------
    smtp_host: str | None = Field(
        None,
        description="SMTP server for alerts and reports; unset = `host` (a local server on "
        "smtp_port) in sandbox mode, else no e-mail is sent.",
    )
    smtp_port: int = Field(
        8025,
        ge=1,
        le=65535,
        description="SMTP port: 587 with STARTTLS, 465 with SSL; 8025 is aiosmtpd's default.",
    )
    smtp_starttls: bool = Field(False, description="Upgrade the connection with STARTTLS.")
    smtp_ssl: bool = Field(False, description="TLS from the first byte (SMTPS, port 465).")
    smtp_username: str | None = Field(None, description="SMTP AUTH user; unset = no login.")
    smtp_password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    smtp_timeout: float = Field(
        10.0, gt=0, description="Seconds to connect and for each SMTP command."
    )
    email_from: str = Field(
        "Leadflow <leadflow@localhost>", description="From address of alerts and reports."
    )
    email_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Recipients of alerts and reports, comma-separated; empty = "
        "alerts@leadflow.test in sandbox mode, else no e-mail is sent.",
    )

    @field_validator("email_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):  # child processes get lists as JSON
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def smtp_server(self) -> str | None:
        return self.smtp_host or (self.host if self.sandbox else None)

    @property
    def email_recipients(self) -> list[str]:
        if self.email_to:
            return list(self.email_to)
        return ["alerts@leadflow.test"] if self.sandbox else []

    # --- webhooks ---
    webhooks: SecretStr | None = Field(
        None,
        description="JSON list of webhook endpoints (connectors.webhooks.WebhookEndpoint): name, "
        "url, secret (whsec_ + base64), events, template or template_path, timeout. A secret: "
        "it holds the signing secrets. Unset = no webhooks.",
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="Seconds one webhook attempt may take (an endpoint may override)."
    )
    webhook_retries: int = Field(
        3,
        ge=0,
        description="Retries after a failed first attempt (time-outs, 408/409/425/429, 5xx).",
    )
    webhook_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first webhook retry; doubles per retry."
    )
    webhook_backoff_max: float = Field(
        60.0, ge=0, description="Longest wait (s) before a webhook retry, Retry-After included."
    )
    webhook_concurrency: int = Field(8, ge=1, description="Webhook deliveries in flight at once.")

    # --- Pipedrive (connectors/pipedrive.py) ---------------------------------------------
    pipedrive_url: str | None = Field(
        None,
        description="Pipedrive company URL (https://<company>.pipedrive.com; /api/v1 and "
        "/api/v2 go below it); unset = <sandbox_url>/pipedrive in sandbox mode, else "
        "https://api.pipedrive.com.",
    )
    pipedrive_api_token: SecretStr | None = Field(
        None,
        description="Pipedrive API token (sent as the x-api-token header, never logged); unset "
        "= the sandbox's token in sandbox mode, else no Pipedrive sync.",
    )
    pipedrive_timeout: float = Field(
        20.0, gt=0, description="Time-out (s) of one Pipedrive request."
    )
    pipedrive_retries: int = Field(
        4, ge=0, description="Retries of a Pipedrive request after a 429, a 5xx or no answer."
    )
    pipedrive_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first Pipedrive retry; doubles per retry."
    )
    pipedrive_backoff_max: float = Field(
        30.0,
        ge=0,
        description="Longest wait (s) before a Pipedrive retry, rate-limit reset included.",
    )
    pipedrive_workers: int = Field(
        4, ge=1, le=16, description="Leads synced to Pipedrive at once (it has no batch call)."
    )
    pipedrive_write_settle: float = Field(
        45.0,
        ge=0,
        description="Seconds after sending a create whose answer never came (time-out, dropped "
        "connection, 5xx) before searching for it: the write may still land, and a search that "
        "runs earlier would miss it and create a duplicate.",
    )

    @property
    def pipedrive_base_url(self) -> str:
        return self._service_url(self.pipedrive_url, "/pipedrive", "https://api.pipedrive.com")

    @property
    def pipedrive_token(self) -> SecretStr | None:
        return self._service_secret(self.pipedrive_api_token, self.sandbox_crm_pipedrive_api_token)

    # --- Salesforce (connectors/salesforce.py) ----------------------------------------------
    salesforce_instance_url: str | None = Field(
        None,
        description="The org's URL (https://acme.my.salesforce.com): set = that org, even in "
        "sandbox mode; the JWT bearer flow sends its token request there. Unset = the "
        "sandbox's Salesforce in sandbox mode.",
    )
    salesforce_domain: str = Field(
        "login",
        description="Login domain (https://{domain}.salesforce.com): login (production orgs) or "
        "test (Salesforce sandbox orgs), also the JWT audience; a My Domain prefix (acme.my) "
        "works for the username-password flow.",
    )
    salesforce_username: str | None = Field(None, description="Salesforce API user.")
    salesforce_password: SecretStr | None = Field(
        None, description="That user's password (OAuth username-password flow)."
    )
    salesforce_consumer_key: str | None = Field(
        None, description="Connected-app consumer key (client_id; the JWT `iss`)."
    )
    salesforce_consumer_secret: SecretStr | None = Field(
        None, description="Connected-app consumer secret (username-password flow)."
    )
    salesforce_private_key_file: Path | None = Field(
        None,
        description="PEM private key of the connected app's certificate: set = the OAuth JWT "
        "bearer flow instead of username-password.",
    )
    salesforce_api_version: str = Field(
        "59.0",
        pattern=r"^\d{2}\.0$",
        description="REST API version (46.0+: sObject collections upsert).",
    )
    salesforce_external_id_field: str = Field(
        "Leadflow_Lead_Id__c",
        description="Unique external-id field of Lead that holds the lead_id (upserts go by it).",
    )
    salesforce_merged_into_field: str = Field(
        "Leadflow_Merged_Into__c",
        description="Lead field set to the survivor's lead_id when dedup merges two synced leads.",
    )
    salesforce_batch_size: int = Field(
        200, ge=1, le=200, description="Leads per composite sObject collections upsert."
    )
    salesforce_bulk_threshold: int = Field(
        2000, ge=1, description="A batch of this many Leads or more goes through Bulk API 2.0."
    )
    salesforce_bulk_poll_interval: float = Field(
        2.0, ge=0, description="Seconds between Bulk API 2.0 job status checks."
    )
    salesforce_timeout: float = Field(30.0, gt=0, description="Time-out (s) of one request.")
    salesforce_max_retries: int = Field(
        3, ge=0, description="Retries of a request on time-outs, lost answers, 5xx and 429."
    )
    salesforce_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first Salesforce retry; doubles per retry."
    )
    salesforce_backoff_max: float = Field(
        30.0,
        ge=0,
        description="Longest wait (s) before a retry; a longer Retry-After stops the batch.",
    )

    @property
    def salesforce_sandbox_url(self) -> str | None:
        """The sandbox's Salesforce, in sandbox mode when no org URL is configured."""
        if self.sandbox and not self.salesforce_instance_url:
            return f"{self.sandbox_url}/salesforce"
        return None

    def _salesforce_or_sandbox(self, configured: str | None, sandbox: str) -> str | None:
        if configured is not None:
            return configured
        return sandbox if self.salesforce_sandbox_url else None

    @property
    def salesforce_login_username(self) -> str | None:
        return self._salesforce_or_sandbox(
            self.salesforce_username, self.sandbox_crm_salesforce_username
        )

    @property
    def salesforce_login_consumer_key(self) -> str | None:
        return self._salesforce_or_sandbox(
            self.salesforce_consumer_key, self.sandbox_crm_salesforce_consumer_key
        )

    @property
    def salesforce_login_password(self) -> SecretStr | None:
        if self.salesforce_password is not None:
            return self.salesforce_password
        sandbox = self.sandbox_crm_salesforce_password
        return SecretStr(sandbox) if self.salesforce_sandbox_url else None

    @property
    def salesforce_login_consumer_secret(self) -> SecretStr | None:
        if self.salesforce_consumer_secret is not None:
            return self.salesforce_consumer_secret
        sandbox = self.sandbox_crm_salesforce_consumer_secret
        return SecretStr(sandbox) if self.salesforce_sandbox_url else None

    # --- HubSpot (connectors/hubspot.py) ------------------------------------------------------
    hubspot_host: str | None = Field(
        None,
        description="HubSpot API host; unset = <sandbox_url>/hubspot in sandbox mode, else "
        "https://api.hubapi.com.",
    )
    hubspot_access_token: SecretStr | None = Field(
        None,
        description="HubSpot private-app access token; unset in sandbox mode = the sandbox's "
        "token (sandbox_crm_hubspot_access_token).",
    )
    hubspot_timeout: float = Field(30.0, gt=0, description="Time-out (s) of one HubSpot request.")
    hubspot_retries: int = Field(
        3, ge=0, description="Retries of one HubSpot request after a 5xx, 429 or no answer."
    )
    hubspot_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first HubSpot retry; doubles per retry."
    )
    hubspot_backoff_max: float = Field(
        10.0,
        ge=0,
        description="Longest wait (s) before a HubSpot retry, the rate-limit window included.",
    )

    @property
    def hubspot_base_url(self) -> str:
        return self._service_url(self.hubspot_host, "/hubspot", "https://api.hubapi.com")

    @property
    def hubspot_token(self) -> SecretStr | None:
        """The configured private-app token, else the sandbox's in sandbox mode."""
        return self._service_secret(
            self.hubspot_access_token, self.sandbox_crm_hubspot_access_token
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()

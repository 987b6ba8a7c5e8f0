"""`leadflow`: the command line. `leadflow --help` lists the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leadflow.cli_crm import crm_app
from leadflow.cli_keys import keys_app
from leadflow.cli_services import services_app
from leadflow.cli_train import train_app
from leadflow.cli_validate import validate_app
from leadflow.cli_webhooks import webhooks_app
from leadflow.settings import get_settings
from models.search import SearchSpec

app = typer.Typer(
    help="Leadflow: scraped, normalised, de-duplicated leads in MongoDB, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(services_app)
app.add_typer(validate_app)
app.add_typer(train_app)
app.add_typer(keys_app)
app.add_typer(webhooks_app)
app.add_typer(crm_app)
# soft_wrap: URLs and figures stay on one line when the output is piped or logged.
console = Console(soft_wrap=True)


def _spec_from_options(
    category: str | None, location: str | None, sources: list[str] | None, limit: int
) -> SearchSpec:
    try:
        return SearchSpec.model_validate(
            {
                "category": category,
                "location": location,
                "sources": sources or ["directory"],
                "limit": limit,
            }
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def print_summary(summary: dict[str, object]) -> None:
    table = Table(title="Run summary", show_header=True)
    table.add_column("stage count")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "spec":
            table.add_row(key.replace("_", " "), str(value))
    console.print(table)


@app.command()
def run(
    category: Annotated[str | None, typer.Option(help="What to look for, e.g. dentist.")] = None,
    location: Annotated[str | None, typer.Option(help='Where, e.g. "Austin, TX".')] = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="directory or google_maps; repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many places per source.")] = 200,
    local: Annotated[
        bool, typer.Option("--local", help="Run in this process instead of on a worker.")
    ] = False,
) -> None:
    """Run the lead pipeline for one search, through the deployment (a worker runs it)."""
    from leadflow import runner

    spec = _spec_from_options(category, location, source, limit)
    settings = get_settings()
    outcome = (
        runner.run_local(spec, settings) if local else runner.run_deployed(spec, settings, console)
    )
    if outcome.summary:
        print_summary(outcome.summary)
    console.print(
        f"Run {outcome.run_id}: [bold]{outcome.state}[/bold]"
        + (f" - {outcome.message}" if outcome.message else "")
    )
    console.print(f"Prefect UI: {settings.prefect_ui}/runs/flow-run/{outcome.run_id}")
    console.print(
        f"MongoDB:    {settings.mongo_url if settings.embedded_mongo else 'LEADFLOW_MONGODB_URI'} (db {settings.mongodb_db})"
    )
    if outcome.state != "COMPLETED":
        raise typer.Exit(130 if outcome.state == "CANCELLED" else 1)


@app.command()
def dedup(
    input_csv: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV with name,address,city,phone,category,website (any of).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the rows plus cluster_id.")
    ],
    truth: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Ground truth JSON (row id -> entity) to score against.",
        ),
    ] = None,
    id_column: Annotated[
        str, typer.Option(help="Row id column matching the ground truth.")
    ] = "listing_id",
    threshold: Annotated[
        float | None, typer.Option(help="Match threshold 0-1 (default: the setting).")
    ] = None,
) -> None:
    """De-duplicate a CSV of businesses with the pipeline's own dedup engine."""
    from leadflow.dedup_file import dedup_csv, evaluate_file

    stats = dedup_csv(input_csv, out, threshold=threshold)
    console.print(f"{stats.rows} rows -> {stats.clusters} businesses; wrote {out}")
    if truth is not None:
        scores = evaluate_file(out, truth, id_column=id_column)
        console.print(
            f"pairwise precision {scores.precision:.4f}  recall {scores.recall:.4f}  f1 {scores.f1:.4f}  "
            f"(true pairs {scores.true_pairs}, predicted pairs {scores.predicted_pairs})"
        )


@app.command()
def forget(
    value: Annotated[str, typer.Argument(help="An email, a domain, or a lead id.")],
    kind: Annotated[
        str | None,
        typer.Option(help="email, domain or lead_id (default: guessed from the value)."),
    ] = None,
) -> None:
    """Erase an email, a domain's emails or a lead everywhere Leadflow keeps them, and never
    store them again (the suppression list keeps only a hash)."""
    from connectors.mongo import shared_store
    from leadflow.forget import Forgetter
    from models.suppression import guess_kind

    chosen = kind or guess_kind(value)
    if chosen not in ("email", "domain", "lead_id"):
        raise typer.BadParameter("--kind must be email, domain or lead_id")
    settings = get_settings()
    report = Forgetter(shared_store(settings), settings).forget(value, chosen)  # type: ignore[arg-type]
    console.print(
        f"{report.kind} forgotten (sha256 {report.value_hash[:12]}…): "
        f"{report.leads_changed} leads changed, {report.leads_deleted} deleted, "
        f"{report.cache_entries} cache entries, {report.quarantine_rows} quarantine rows, "
        f"{len(report.files)} files, {report.artifacts} artifacts, "
        f"{report.webhook_entries} webhook log entries, {report.ledger_entries} CRM ledger "
        f"entries, {report.crm_records_cleared} CRM records; suppressed from now on"
    )
    for problem in report.crm_errors:
        console.print(f"[red]CRM: {problem}")
    if report.artifacts_error:
        console.print(
            f"[red]the Prefect artifacts could not be checked ({report.artifacts_error}); run "
            "the command again once `leadflow status` shows Prefect up"
        )
        raise typer.Exit(1)
    if report.crm_errors:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

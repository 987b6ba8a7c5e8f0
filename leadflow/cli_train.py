"""`leadflow train`; merged into the main CLI with `app.add_typer(train_app)`.

Also runs on its own: `python -m leadflow.cli_train --data FILE.csv --label COLUMN`.
scikit-learn and pandas are imported inside the command, so `leadflow --help` stays quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from models.scoring import CVMetrics, LeadTrainingResult, ModelRegistry, TableTrainingResult

train_app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
console = Console(soft_wrap=True)


def _existing_file(help_text: str) -> Any:
    return typer.Option(exists=True, dir_okay=False, readable=True, help=help_text)


@train_app.command("train")
def train(
    outcomes: Annotated[
        Path | None,
        _existing_file(
            "CSV lead_id,outcome (1/0, yes/no, won/lost): trains the lead scorer on the "
            "stored leads' features; promoted only when it beats the current one."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        _existing_file("Any labelled CSV table: trained and evaluated, never scores leads."),
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="With --data: the outcome column (yes/no, 1/0, ...).")
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(help="With --data: columns to leave out, comma-separated (e.g. leakage)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Also write the figures as JSON here.")
    ] = None,
) -> None:
    """Train a scorer, cross-validate it, and save it as a new model version."""
    if (outcomes is None) == (data is None):
        raise typer.BadParameter("give either --outcomes FILE or --data FILE --label COLUMN")
    if data is not None and not label:
        raise typer.BadParameter("--data needs --label COLUMN", param_hint="--label")
    if outcomes is not None and (label or exclude):
        raise typer.BadParameter(
            "--label and --exclude go with --data; an outcomes file is lead_id,outcome",
            param_hint="--label/--exclude",
        )

    from models.scoring import ModelRegistry, TrainingDataError

    registry = ModelRegistry.from_settings()
    try:
        if data is not None:
            assert label is not None  # checked above; for the type checker
            columns = [c.strip() for c in (exclude or "").split(",") if c.strip()]
            summary = _train_table(data, label, columns, registry)
        else:
            assert outcomes is not None
            summary = _train_leads(outcomes, registry)
    except TrainingDataError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.source}") from None
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        console.print(f"Report: {report}")


def _train_table(
    data: Path, label: str, exclude: list[str], registry: ModelRegistry
) -> dict[str, Any]:
    from models.scoring import read_labelled_table, train_table

    table = read_labelled_table(data, label, exclude)
    console.print(
        f"{data.name}: {len(table.labels):,} rows, label {label!r} "
        f"({int(table.labels.sum()):,} positive); numeric: {', '.join(table.numeric) or '-'}; "
        f"categorical: {', '.join(table.categorical) or '-'}"
    )
    for column, why in table.ignored.items():
        console.print(f"left out {column!r}: {why}")
    if table.unlabelled_rows:
        console.print(f"left out {table.unlabelled_rows:,} rows without a label")
    with console.status("cross-validating the model and the baseline on the same 5 folds"):
        result = train_table(table, registry, source=str(data))
    _print_metrics(
        "Cross-validated (5 stratified folds)",
        {"model (calibrated)": result.metrics, "baseline (logistic regression)": result.baseline},
    )
    margin = result.metrics.roc_auc - result.baseline.roc_auc
    verdict = "beats" if result.beats_baseline else "does not beat"
    console.print(f"The model {verdict} the baseline's ROC AUC ({margin:+.4f}).")
    _print_saved(result)
    return result.report()


def _train_leads(outcomes_file: Path, registry: ModelRegistry) -> dict[str, Any]:
    from pymongo.errors import PyMongoError

    from connectors.mongo import shared_store
    from leadflow.settings import get_settings
    from models.scoring import read_outcomes, train_lead_model
    from tasks.score import labelled_leads

    outcomes = read_outcomes(outcomes_file)
    settings = get_settings()
    try:
        found = labelled_leads(shared_store(settings), outcomes.by_lead)
    except PyMongoError as exc:
        typer.secho(
            f"cannot read leads from MongoDB ({settings.mongodb_db}): {exc}. "
            "Is `leadflow up` running, or LEADFLOW_MONGODB_URI set?",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1) from None
    console.print(
        f"{outcomes_file.name}: {len(outcomes.by_lead):,} lead ids with an outcome -> "
        f"{len(found.leads):,} stored leads ({found.via_merge:,} reached through merges, "
        f"{len(found.not_found):,} not found, {outcomes.unlabelled_rows:,} rows without an outcome)"
    )
    with console.status("cross-validating on 5 folds"):
        result = train_lead_model(found.leads, found.labels, registry, source=str(outcomes_file))
    _print_metrics(
        "Cross-validated (5 stratified folds)",
        {"new model": result.metrics, "heuristic prior": result.heuristic},
    )
    for note in result.notes:
        console.print(note)
    _print_saved(result)
    console.print(f"[bold]{result.decision}[/bold]")
    return {**result.report(), "not_found": found.not_found}


def _print_metrics(title: str, columns: dict[str, CVMetrics]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    rows = {
        "ROC AUC": lambda m: f"{m.roc_auc:.4f} ± {m.roc_auc_std:.4f}",
        "accuracy": lambda m: f"{m.accuracy:.4f}",
        "conversion in top 10%": lambda m: (
            f"{m.top_decile_conversion:.1%} ({m.top_decile_conversion / m.base_rate:.1f}x)"
        ),
        "base rate": lambda m: f"{m.base_rate:.1%}",
        "rows": lambda m: f"{m.n_rows:,}",
    }
    for metric, show in rows.items():
        table.add_row(metric, *(show(m) for m in columns.values()))
    console.print(table)


def _print_saved(result: TableTrainingResult | LeadTrainingResult) -> None:
    console.print(f"Saved {result.info.kind} model {result.info.version} in {result.info.path}")


if __name__ == "__main__":
    train_app()

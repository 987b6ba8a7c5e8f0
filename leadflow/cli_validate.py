"""`leadflow validate FILE`: the pipeline's lead expectation suite on a CSV or JSONL file.

Merged into the main CLI with `app.add_typer(validate_app)`. For CI data-quality checks: exit 0
when every expectation passes, 1 when any fails (a report names each failure: expectation,
column, failing rows, example values, row numbers), 2 when the file cannot be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

    from tasks.validate import CheckOutcome, FrameValidation

validate_app = typer.Typer(add_completion=False)

SUPPORTED_SUFFIXES = (".csv", ".jsonl")
EXAMPLE_VALUES = 3
EXAMPLE_ROWS = 5
EXIT_FAILED = 1
EXIT_UNREADABLE = 2


class UnreadableFile(Exception):
    """The file is not a lead table we can read; the message says why."""


def read_lead_file(path: Path) -> pd.DataFrame:
    """A CSV (every cell as text, so phones keep their `+`) or JSONL file as pandas reads it."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableFile(
            f"{path.name}: unsupported file type {path.suffix or '(none)'!r}; "
            f"use {' or '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        if suffix == ".csv":
            table = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
        else:
            table = pd.read_json(
                path, lines=True, dtype=False, convert_dates=False, encoding="utf-8"
            )
    except (OSError, ValueError) as exc:  # parser, JSON, encoding and empty-file errors
        raise UnreadableFile(f"cannot read {path}: {exc}") from exc
    if table.columns.empty:
        raise UnreadableFile(f"{path} is empty")
    return table


def _rows_text(rows: tuple[int, ...]) -> str:
    # 1-based data rows: the first row after a CSV header (or the first JSONL line) is row 1.
    shown_rows = ", ".join(str(row + 1) for row in rows[:EXAMPLE_ROWS])
    return shown_rows + (
        f", ... ({len(rows) - EXAMPLE_ROWS} more)" if len(rows) > EXAMPLE_ROWS else ""
    )


def _examples_text(frame: pd.DataFrame, outcome: CheckOutcome) -> str:
    from tasks.validate import row_value, shown

    examples: dict[str, None] = {}  # distinct, in row order
    for row in outcome.failing_rows:
        examples.setdefault(shown(row_value(frame, outcome.check, row)))
        if len(examples) == EXAMPLE_VALUES:
            break
    return ", ".join(examples)


def print_report(
    console: Console, path: Path, frame: pd.DataFrame, validation: FrameValidation
) -> None:
    table = Table(title=f"Lead expectation suite on {path.name} ({validation.rows} rows)")
    for header in ("status", "expectation", "column", "failing rows", "examples", "rows"):
        table.add_column(header, justify="right" if header == "failing rows" else "left")
    style = {"passed": "green", "failed": "bold red", "skipped": "yellow"}
    for outcome in validation.outcomes:
        table.add_row(
            f"[{style[outcome.status]}]{outcome.status.upper()}[/]",
            escape(outcome.check.description),
            escape(outcome.check.label),
            *_failure_cells(frame, outcome),
        )
    console.print(table)

    # One plain line per failure as well: CI logs are narrow and get grepped.
    for outcome in validation.failed:
        if outcome.failing_rows:
            console.print(
                f"[red]FAILED[/] {escape(outcome.check.label)}: "
                f"{escape(outcome.check.description)}: {len(outcome.failing_rows)} row(s), "
                f"e.g. {escape(_examples_text(frame, outcome))} "
                f"(rows {_rows_text(outcome.failing_rows)})"
            )
        else:  # a table-level expectation: the file itself is wrong
            console.print(f"[red]FAILED[/] {escape(path.name)}: {escape(outcome.check.failure)}")
    if validation.skipped:
        reasons = dict.fromkeys(str(o.skipped) for o in validation.skipped)
        console.print(f"Skipped {len(validation.skipped)} expectation(s): {'; '.join(reasons)}")
    if validation.data_docs_index is not None:
        console.print(f"Data Docs: {escape(str(validation.data_docs_index))}")
    failed = len(validation.failed)
    console.print(
        f"[bold red]{escape(path.name)}: {failed} expectation(s) failed[/]"
        if failed
        else f"[bold green]{escape(path.name)}: every expectation passed[/]"
    )


def _failure_cells(frame: pd.DataFrame, outcome: CheckOutcome) -> tuple[str, str, str]:
    """The failing rows, examples and row numbers cells (the skip reason for a skipped one)."""
    if outcome.status == "skipped":
        return "", escape(str(outcome.skipped)), ""
    if outcome.status == "passed":
        return "", "", ""
    if not outcome.failing_rows:  # a table-level expectation
        return "-", escape(outcome.check.failure), "-"
    return (
        str(len(outcome.failing_rows)),
        escape(_examples_text(frame, outcome)),
        _rows_text(outcome.failing_rows),
    )


@validate_app.command("validate")
def validate(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="Lead file: .csv (with a header) or .jsonl (one JSON object per line).",
        ),
    ],
    docs: Annotated[
        Path | None,
        typer.Option(
            "--docs", file_okay=False, help="Also write Great Expectations Data Docs (HTML) here."
        ),
    ] = None,
) -> None:
    """Check a lead file against the pipeline's expectation suite; exit 1 if any fails.

    Expectations on optional columns the file does not have are skipped; `name` is required.
    Uniqueness is checked on lead_id, or on (source, source_id) when there is no lead_id.
    """
    # Imported here: the stage module (Prefect, pandas) and, on first use, Great Expectations
    # take seconds to import, and `leadflow --help` should not wait for them.
    from tasks.validate import file_frame, validate_frame

    try:
        raw = read_lead_file(file)
    except UnreadableFile as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_UNREADABLE) from None
    frame = file_frame(raw)
    validation = validate_frame(frame, pipeline=False, docs_dir=docs, run_name=file.name)
    print_report(Console(soft_wrap=True, highlight=False), file, frame, validation)
    if not validation.success:
        raise typer.Exit(EXIT_FAILED)

"""`leadflow webhooks list|replay`: the webhook delivery log and its dead letters; merged into
the main CLI with `app.add_typer(webhooks_app)`.

`list` prints tab-separated rows (webhook-id first) so they can be cut and piped into
`replay --id`; nothing here prints a secret or a payload (the log holds neither). `replay`
renders each payload again from the stored lead: a lead that changed since its dead event
is sent as a new event instead, and the old one is marked superseded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from pymongo.database import Database

webhooks_app = typer.Typer(
    name="webhooks",
    help="Webhook deliveries: list them by status, replay dead letters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# soft_wrap: the replay summary stays on one line when piped.
console = Console(soft_wrap=True, highlight=False)
notes = Console(stderr=True, soft_wrap=True, highlight=False)


@contextmanager
def _database() -> Iterator[Database]:
    """The configured MongoDB database; a clear message when MongoDB fails."""
    # Imported here: pymongo and the store stay out of `leadflow --help`.
    from pymongo.errors import PyMongoError

    from connectors.mongo import LeadStore
    from leadflow.services import mask_url
    from leadflow.settings import get_settings

    settings = get_settings()
    store = LeadStore.from_settings(settings)
    try:
        yield store.db
    except PyMongoError as exc:
        notes.print(
            f"[red]MongoDB at {mask_url(settings.mongo_url)} failed:[/] {escape(str(exc))}\n"
            "Is `leadflow up` running (or LEADFLOW_MONGODB_URI right)?"
        )
        raise typer.Exit(1) from None
    finally:
        store.close()


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


@webhooks_app.command("list")
def list_deliveries(
    status: Annotated[
        str | None,
        typer.Option(help="delivered, failed, dead, filtered or superseded (default: all)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="Rows at most (0 = all).")] = 50,
) -> None:
    """List deliveries, most recently updated first, with the count per status."""
    from connectors.webhooks import STATUSES, DeliveryLog

    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"one of {', '.join(STATUSES)}", param_hint="--status")
    with _database() as db:
        log = DeliveryLog(db)
        entries = log.find(status=status, limit=limit)
        totals = log.status_counts()
    notes.print(", ".join(f"{name} {totals.get(name, 0)}" for name in STATUSES))
    if not entries:
        return
    # Plain echo, not rich: rich would expand the tabs that make the rows easy to cut.
    typer.echo("webhook-id\tstatus\tendpoint\tlead_id\tevent\tattempts\tupdated (UTC)\tlast error")
    for entry in entries:
        typer.echo(
            "\t".join(
                [
                    entry["_id"],
                    entry["status"],
                    entry["endpoint"],
                    entry["lead_id"],
                    entry["event"],
                    str(entry.get("attempts", 0)),
                    _when(entry.get("updated_at")),
                    entry.get("last_error") or "-",
                ]
            )
        )


@webhooks_app.command("replay")
def replay_deliveries(
    webhook_ids: Annotated[
        list[str] | None,
        typer.Option("--id", help="A webhook-id to re-send (repeatable), whatever its status."),
    ] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="Re-send every dead letter.")
    ] = False,
) -> None:
    """Re-send deliveries under their original webhook-id; exit 1 if any is still dead."""
    from connectors.webhooks import WebhookConfigError, replay
    from leadflow.settings import get_settings

    if bool(webhook_ids) == all_dead:
        raise typer.BadParameter("give --id (repeatable) or --all-dead")
    with _database() as db:
        try:
            counts = replay(db, get_settings(), ids=webhook_ids or (), all_dead=all_dead)
        except WebhookConfigError as exc:
            notes.print(f"[red]{escape(str(exc))}")
            raise typer.Exit(1) from None
    summary = ", ".join(f"{name} {value}" for name, value in counts.items() if value)
    console.print(summary or "nothing to replay")
    if counts["dead"]:
        raise typer.Exit(1)

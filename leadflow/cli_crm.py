"""`leadflow crm ...`: the CRM sync ledger from the command line.

leadflow crm status                 # ledger entries per CRM and status
leadflow crm dead [--crm NAME]      # the dead letters, with the reason each failed
leadflow crm retry [--crm NAME] [--lead ID]   # dead letters back to pending
leadflow crm sync [--limit N]       # run the re-sync (the `crm-sync` flow) here, now
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    pass

crm_app = typer.Typer(name="crm", help="CRM sync: ledger status, dead letters, retries.")
console = Console(soft_wrap=True)

CrmOption = Annotated[str | None, typer.Option("--crm", help="salesforce, hubspot or pipedrive.")]


def _ledger():
    from connectors.mongo import shared_store
    from tasks.sync import LEDGER, Ledger

    return Ledger(shared_store().db[LEDGER])


@crm_app.command("status")
def status() -> None:
    """Ledger entries per CRM and status."""
    table = Table(title="CRM sync ledger")
    for column in ("CRM", "status", "leads"):
        table.add_column(column)
    for (destination, state), count in sorted(_ledger().counts().items()):
        table.add_row(destination, state, str(count))
    console.print(table)


@crm_app.command("dead")
def dead(crm: CrmOption = None) -> None:
    """The dead letters: every lead a CRM could not take, and why."""
    entries = _ledger().dead(crm)
    if not entries:
        console.print("No dead letters.")
        return
    table = Table(title=f"CRM dead letters: {len(entries)}")
    for column in ("CRM", "lead", "attempts", "reason"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            entry["destination"],
            entry["lead_id"],
            str(entry.get("attempts", 0)),
            escape(str(entry.get("last_error") or "")),
        )
    console.print(table)
    raise typer.Exit(1)


@crm_app.command("retry")
def retry(
    crm: CrmOption = None,
    lead: Annotated[str | None, typer.Option(help="Only this lead_id.")] = None,
) -> None:
    """Put dead letters back to pending (after fixing the data or the mapping)."""
    query: dict[str, object] = {"status": "dead"}
    if crm:
        query["destination"] = crm
    if lead:
        query["lead_id"] = lead
    result = _ledger().collection.update_many(
        query, {"$set": {"status": "pending", "attempts": 0, "next_attempt_ts": 0}}
    )
    console.print(
        f"{result.modified_count} dead letter(s) back to pending; `leadflow crm sync` sends them."
    )


@crm_app.command("sync")
def sync(limit: Annotated[int, typer.Option(help="Ledger entries per CRM.")] = 5000) -> None:
    """Re-sync pending and failed entries now, in this process (the `crm-sync` flow, reported
    to the Prefect server like the scheduled ones)."""
    from flows.crm_sync import crm_sync
    from leadflow.prefect_setup import prefect_server
    from leadflow.settings import get_settings

    with prefect_server(get_settings()):
        result = crm_sync(limit=limit)
    console.print(result)
    if result.get("dead_letters"):
        console.print(f"{result['dead_letters']} dead letter(s): `leadflow crm dead` lists them.")

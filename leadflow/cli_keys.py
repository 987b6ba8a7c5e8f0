"""`leadflow keys create|list|revoke`: the API's keys; merged into the main CLI with
`app.add_typer(keys_app)`.

The command line is the only place that can grant `ratelimit:exempt`. `create` prints the key
alone on stdout (so `KEY=$(leadflow keys create --name ci)` works) and everything else on
stderr; the key is never shown again, and no command ever prints a hash or salt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from api.keys import ApiKeys

keys_app = typer.Typer(
    name="keys",
    help="API keys: create (shown once), list, revoke.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# soft_wrap: ids and scope lists stay on one line when piped.
console = Console(soft_wrap=True)
notes = Console(stderr=True, soft_wrap=True)


@contextmanager
def _keys() -> Iterator[ApiKeys]:
    """The key store on the configured MongoDB; a clear message when MongoDB fails."""
    # Imported here: pymongo and the store stay out of `leadflow --help`.
    from pymongo.errors import PyMongoError

    from api.keys import ApiKeys
    from leadflow.services import mask_url
    from leadflow.settings import get_settings

    settings = get_settings()
    store = ApiKeys.from_settings(settings)
    try:
        yield store
    except PyMongoError as exc:
        notes.print(
            f"[red]MongoDB at {mask_url(settings.mongo_url)} failed:[/] {escape(str(exc))}\n"
            "Is `leadflow up` running (or LEADFLOW_MONGODB_URI right)?",
            highlight=False,
        )
        raise typer.Exit(1) from None
    finally:
        store.close()


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "-"


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. crm-sync.")],
    scopes: Annotated[
        str,
        typer.Option(
            help="Comma-separated: runs:read, runs:write, leads:read, leads:write, export:read, "
            "metrics:read, admin (all of those), ratelimit:exempt (load tests, trusted callers)."
        ),
    ] = "runs:read,leads:read",
) -> None:
    """Create an API key and print it once; only a hash of it is stored."""
    from api.keys import parse_scopes

    try:
        granted = parse_scopes(scopes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scopes") from None
    with _keys() as store:
        try:
            # The command line is the one caller allowed to grant ratelimit:exempt.
            record, plaintext = store.create(name, granted, allow_exempt=True)
        except ValueError as exc:  # scopes were checked above: this is the name
            raise typer.BadParameter(str(exc), param_hint="--name") from None
    notes.print(
        f"Created API key {record.key_id} ({escape(record.name)}) with scopes "
        f"{', '.join(sorted(record.scopes))}:",
        highlight=False,
    )
    typer.echo(plaintext)
    notes.print(
        "[bold yellow]Store this key now: it is shown only this once and cannot be shown "
        f"again.[/] Revoke it with `leadflow keys revoke {record.key_id}`.",
        highlight=False,
    )


@keys_app.command("list")
def list_keys() -> None:
    """List the API keys: ids, names, scopes, dates; never a key or its hash."""
    with _keys() as store:
        records = store.list()
    if not records:
        notes.print("No API keys yet: `leadflow keys create --name NAME`.")
        return
    table = Table(title="API keys")
    for header in ("id", "name", "scopes", "created", "last used", "revoked"):
        table.add_column(header)
    for record in records:
        table.add_row(
            record.key_id,
            escape(record.name),
            ", ".join(sorted(record.scopes)),
            _when(record.created_at),
            _when(record.last_used),
            f"[red]{_when(record.revoked_at)}[/]" if record.revoked else "-",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id, as `leadflow keys list` shows it.")],
) -> None:
    """Revoke an API key: every API instance refuses it from the next request on."""
    from api.keys import KEY_ID_PATTERN

    if not KEY_ID_PATTERN.fullmatch(key_id):
        # The value is not echoed: it may be a whole key pasted by mistake.
        raise typer.BadParameter(
            "give the key id: 12 hex characters, as `leadflow keys list` shows", param_hint="KEY_ID"
        )
    with _keys() as store:
        record = store.revoke(key_id)
    if record is None:
        notes.print(f"[red]No API key with id {key_id}.")
        raise typer.Exit(1)
    console.print(
        f"API key {record.key_id} ({escape(record.name)}) revoked at {_when(record.revoked_at)}.",
        highlight=False,
    )

"""`leadflow up / down / status`; merged into the main CLI with `app.add_typer(services_app)`."""

from __future__ import annotations

import typer

from leadflow import services
from leadflow.settings import get_settings

services_app = typer.Typer(no_args_is_help=True, add_completion=False)


def _echo(message: str) -> None:
    typer.echo(message)


@services_app.command("up")
def up(
    force_deploy: bool = typer.Option(
        False, "--force-deploy", help="Re-register prefect.yaml even if nothing changed."
    ),
) -> None:
    """Start MongoDB (embedded), the Prefect server, the sandbox and a worker; idempotent."""
    settings = get_settings()
    try:
        services.up(settings, echo=_echo)
        if force_deploy:
            from leadflow import prefect_setup

            prefect_setup.deploy(settings, force=True)
            _echo("prefect  deployments re-registered")
    except services.ServiceError as exc:  # prefect_setup.SetupError included
        typer.secho(f"leadflow up failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    _print_status()


@services_app.command("down")
def down() -> None:
    """Stop every service `leadflow up` started (external services are left alone)."""
    services.down(get_settings(), echo=_echo)


@services_app.command("status")
def status() -> None:
    """One line per service: name, up|down, address."""
    _print_status()


def _print_status() -> None:
    for entry in services.status(get_settings()):
        line = entry.line()
        typer.secho(line, fg=typer.colors.GREEN if entry.up else typer.colors.RED)

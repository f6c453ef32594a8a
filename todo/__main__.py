"""The `todo` command (`python -m todo` does the same): `todo serve` runs the service."""

import click

from todo import serve as server


@click.group()
def cli() -> None:
    """The todo service."""


@cli.command()
def serve() -> None:
    """Run the production server on HOST:PORT with WEB_CONCURRENCY worker processes.

    Every setting comes from the environment; README.md lists them.
    """
    try:
        settings = server.settings()
        server.check(settings)
    except server.SettingsError as error:
        raise click.UsageError(str(error)) from None
    server.run(settings)


def main() -> None:
    """Run the `todo` command."""
    cli(prog_name="todo")


if __name__ == "__main__":
    main()

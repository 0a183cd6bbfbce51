"""`flywheel console`: the web console (review page, overview) on 127.0.0.1 by default."""

from __future__ import annotations

import click

from kernel.cli import RunFailure, UsageFailure, ctx


@click.command("console")
@click.option("--host", default=None, help="Address to bind. Anything but loopback needs a token "
              "(FLYWHEEL_CONSOLE_TOKEN or _FILE). [default: FLYWHEEL_CONSOLE_HOST or 127.0.0.1]")
@click.option("--port", default=None, type=click.IntRange(1, 65535),
              help="[default: FLYWHEEL_CONSOLE_PORT or 8765]")
def console(host, port):
    """Serve the console: a keyboard-driven review page and an overview per task.

    `flywheel up` starts one itself (unless --no-console); this command serves another, e.g. on
    another address. Verdicts are published on review.verdicts (the review agent of `flywheel
    up` applies them); pages read the warehouse through the running `flywheel up` (or the
    ClickHouse server). All assets are served by the console itself: it works without internet.
    """
    from console.launch import ConsoleSetupError, serve

    c = ctx()
    settings = c.settings
    host = host or settings.console_host
    port = port or settings.console_port or 8765
    try:
        serve(settings, c.tasks(), host, port, echo=click.echo)
    except ConsoleSetupError as exc:
        raise (UsageFailure if exc.usage else RunFailure)(str(exc)) from None


commands: list = [console]

"""Installs the drift stage into the stream worker (see streams.app.STAGE_MODULES)."""


def install(ctx) -> None:
    """Add drift agents, timers and curate hooks to ctx.app. Nothing yet."""

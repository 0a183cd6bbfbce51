"""CLI commands of the drift stage (`flywheel drift`, `flywheel retrain`)."""

commands: list = []

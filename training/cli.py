"""CLI commands of the training stage (`flywheel gate`, `flywheel models`, `flywheel train-worker`)."""

commands: list = []

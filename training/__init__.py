"""The training worker and the release gate."""

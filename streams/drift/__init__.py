"""Streaming drift detection and the retrain trigger."""

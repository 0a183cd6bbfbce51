"""flywheel's stream worker: curation, drift, trigger and the warehouse sink."""

__version__ = "0.1.0"

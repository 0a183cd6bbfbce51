"""flywheel's contracts: topic catalogue, JSON Schemas, event types and ClickHouse DDL.

Nothing in this package does I/O beyond reading its own packaged files.
"""

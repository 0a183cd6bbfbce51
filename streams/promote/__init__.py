"""Promotion and rollback: a config change on model.config, reversible in seconds.

    policy.py     the pure decisions (promote / rollback), lifecycle checked by kernel.lifecycle
    apply.py      the I/O: publish the record, history row, registry lifecycle, model.events
    commands.py   `flywheel promote`, `flywheel rollback`
"""

"""The canary stage: shadow a candidate on live traffic and judge it on paired answers.

    config.py    the ``[canary]`` section (pct, min_pairs, min_duration, max_disagreement, ...)
    judge.py     the pure decision: promote / abort / inconclusive, anytime-valid (betting martingales)
    pairs.py     pure helpers: who is shadowed (hash of the request id), a pair, agreement, review items
    stage.py     the Faust agent on live.requests, the background pool that asks the candidate, the judge timer
    store.py     canary_pairs, the canary_windows view, canary_decisions (schemas/ddl/0011_canary.sql)
    commands.py  `flywheel canary start|stop|status`
"""

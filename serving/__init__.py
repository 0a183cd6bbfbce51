"""Serving and promotion: a CPU model server speaking vLLM's OpenAI-compatible subset, a router
that answers a task with its serving version, and reversible promotion.

    gguf.py        the packaged SmolLM2 GGUF as a causal base model (converted once, cached)
    engine.py      one base model per base, several LoRA adapters at once (peft multi-adapter)
    server.py      the model server: /v1/models, /v1/chat/completions, /classify, adapter loading
    config.py      model.config records and applying them (pure)
    history.py     the model_config history table
    live.py        batched, non-blocking publishing of live.requests
    router.py      task -> serving version -> backend; publishes live.requests
    run.py         `flywheel serve`: router + model server in one process
    commands.py    `flywheel serve`, `flywheel predict`

Promotion and rollback (the records this package follows) live in streams/promote/.
"""

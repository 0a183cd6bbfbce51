"""Serving and promotion: a CPU model server speaking vLLM's OpenAI-compatible subset, a router
that answers a task with its serving version, and reversible promotion.

    gguf.py        the packaged SmolLM2 GGUF as a causal base model (converted once, cached)
    engine.py      one base model per base, several LoRA adapters at once (peft multi-adapter)
    server.py      the model server: /v1/models, /v1/chat/completions, /classify, adapter loading
    config.py      model.config records and applying them (pure)
    promotion.py   promotion and rollback rules (pure)
    live.py        batched, non-blocking publishing of live.requests
    router.py      task -> serving version -> backend; publishes live.requests
"""

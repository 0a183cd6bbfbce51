"""The training worker and the release gate.

Data path, top to bottom:

    worker.py     consume retrain.requests (consumer group, one job at a time, commit after the outcome)
    dataset.py    snapshot of `examples` up to the watermark, gold overlaps excluded; split; manifest
    encoder.py    student (a): MiniLM + classification head + LoRA (CPU)
    causal_lm.py  student (b): chat SFT, loss on assistant tokens, LoRA / QLoRA (GPU)
    loop.py       the shared training loop: early stopping, best checkpoint kept, progress
    artifacts.py  immutable versioned artifacts, base model identity, loading a version to predict
    gate.py       the pure gate decision and scoring
    gating.py     the gate's I/O: gold set, pinned baseline, verdict records, model.events
    store.py      retrain_runs / model_registry / eval_results / gate_verdicts / gate_baselines
    config.py     typed [train] and [gate] sections of a task
    cli.py        `flywheel gate`, `flywheel models`, `flywheel train-worker`
"""

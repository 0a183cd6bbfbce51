"""CLI commands of serving: `flywheel serve`, `flywheel predict`."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import click

from kernel.cli import RunFailure, UsageFailure, ctx

DEFAULT_ROUTER = "http://127.0.0.1:8000"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, envvar="FLYWHEEL_SERVE_PORT",
              help="The router's port: requests name a task (model: \"<task>\") or a version.")
@click.option("--model-port", type=int, default=8001, show_default=True, envvar="FLYWHEEL_MODEL_PORT",
              help="The CPU model server's port (vLLM's API, adapters by version name); 0: none.")
@click.option("--backend", "backends", multiple=True, metavar="[KIND=]URL", envvar="FLYWHEEL_SERVE_BACKENDS",
              help="A model server speaking vLLM's API for a student kind (causal_lm=http://vllm:8000, "
                   "encoder_full=URL; kinds: encoder_classifier, encoder_full, embedding_head, causal_lm) or a bare "
                   "URL for every kind; kinds without one use the in-process engine.")
@click.option("--max-adapters", type=int, default=8, show_default=True,
              help="Adapters kept loaded; the serving, previous and canary versions of every task always stay.")
@click.option("--no-publish", is_flag=True, help="Do not publish served requests on live.requests.")
@click.option("-v", "--verbose", is_flag=True)
def serve_cmd(host, port, model_port, backends, max_adapters, no_publish, verbose):
    """Serve every task's serving version (from model.config) and publish live.requests.

    Runs the router and, unless every student kind has a --backend, the CPU model server with
    one base model per base and the versions in use (LoRA adapters, fully fine-tuned encoders,
    linear heads on a frozen encoder). New model.config records
    (`flywheel promote`, `flywheel rollback`) apply within a second, without failing a request.
    """
    import os

    from .run import ServeOptions, parse_backends, serve

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "httpx", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        backend_map = parse_backends(backends)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if max_adapters < 3:
        raise UsageFailure("--max-adapters must be at least 3 (serving, previous and canary stay loaded)")
    opts = ServeOptions(host=host, port=port, model_port=model_port or None, backends=backend_map,
                        max_adapters=max_adapters, publish=not no_publish,
                        api_key=os.environ.get("FLYWHEEL_VLLM_API_KEY") or None)
    try:
        asyncio.run(serve(ctx().settings, opts))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise RunFailure(f"cannot serve on {host}:{port}/{model_port} ({exc}); pick free ports with --port "
                         "and --model-port") from None


@click.command("predict")
@click.option("--task", "task_name", required=True, help="Task name (answered by its serving version).")
@click.option("--model", "version", default=None, help="Ask this version instead of the serving one.")
@click.option("--url", default=DEFAULT_ROUTER, show_default=True, envvar="FLYWHEEL_ROUTER_URL",
              help="The router (`flywheel serve`).")
@click.argument("text")
def predict_cmd(task_name, version, url, text):
    """Answer TEXT with the task's serving version; TEXT "-" reads JSON Lines from stdin
    ({"input": ..., "id": ...} or a JSON string per line) and writes one JSON line per input."""
    import httpx

    model = version or task_name

    def ask(client, texts: list[str]) -> dict:
        try:
            r = client.post("/v1/predict", json={"model": model, "input": texts})
        except httpx.HTTPError as exc:
            raise RunFailure(f"cannot reach the router at {url} ({exc}); is `flywheel serve` running? "
                             "(--url or FLYWHEEL_ROUTER_URL)") from None
        if r.status_code >= 400:
            try:
                msg = r.json()["error"]["message"]
            except Exception:
                msg = r.text
            raise RunFailure(msg)
        return r.json()

    with httpx.Client(base_url=url, timeout=300) as client:
        if text != "-":
            out = ask(client, [text])
            click.echo(f"{out['outputs'][0]}\t({out['model_version']})")
            return
        items = []
        for n, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise UsageFailure(f"stdin line {n}: not JSON ({exc})") from None
            if isinstance(obj, str):
                obj = {"input": obj}
            if not isinstance(obj, dict) or not isinstance(obj.get("input"), str):
                raise UsageFailure(f'stdin line {n}: give {{"input": "<text>"}} or a JSON string')
            items.append(obj)
        for i in range(0, len(items), 32):
            chunk = items[i:i + 32]
            out = ask(client, [o["input"] for o in chunk])
            for o, y in zip(chunk, out["outputs"]):
                click.echo(json.dumps({**o, "output": y, "model_version": out["model_version"]}))


commands: list = [serve_cmd, predict_cmd]

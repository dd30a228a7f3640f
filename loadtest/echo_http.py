"""The HTTP baseline: a bare FastAPI app on uvicorn that answers with a pre-encoded body.

One POST route (``/v1/bundle`` by default, so the benchmark sends it the very requests it
sends livefeat) reads the request body and returns the same bytes every time, and
``GET /readyz`` says it is up. uvicorn runs exactly as ``service/server.py`` runs livefeat:
uvloop, httptools, no access log, no lifespan, no log config. What livefeat costs on top
of this is its own work: routing, middleware, the core, the store and the encoding.

    python -m loadtest.echo_http --port 8090 --body-file response.json
    python -m loadtest.echo_http --port 8090 --size 151732
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI, Request
from fastapi.responses import Response

JSON = "application/json"
TELEMETRY_OFF: Any = {"tracing": False, "metrics": False, "logs": False}  # service/http/app.py


def filler_body(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 12)."""
    head, tail = b'{"pad":"', b'"}'
    if size < len(head) + len(tail) + 2:
        raise ValueError(f"a body of {size} bytes is too small; give at least 12")
    return head + b"x" * (size - len(head) - len(tail)) + tail


def create_app(body: bytes, path: str = "/v1/bundle") -> FastAPI:
    """The echo app: POST ``path`` -> ``body``; GET /readyz -> ready."""
    # FastAPI as livefeat configures it: docs routes included, OpenTelemetry off.
    app = FastAPI(title="echo", telemetry=TELEMETRY_OFF)

    @app.post(path)
    async def echo(request: Request) -> Response:
        await request.body()
        return Response(body, media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b'{"status":"ready"}', media_type=JSON)

    return app


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` with the settings of service/server.py, until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=20,
    )
    uvloop.run(uvicorn.Server(config).serve())


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the flags and serve."""
    p = argparse.ArgumentParser(prog="python -m loadtest.echo_http", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/bundle", help="the POST route (default /v1/bundle)")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body-file", type=Path, help="answer with the bytes of this file")
    body.add_argument("--size", type=int, help="answer with a JSON filler of this many bytes")
    args = p.parse_args(argv)
    data = args.body_file.read_bytes() if args.body_file else filler_body(args.size)
    serve(create_app(data, args.path), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

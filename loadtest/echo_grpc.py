"""The gRPC baseline: a bare grpc.aio server that answers GetBundle with pre-made bytes.

One generic handler for ``/livefeat.v1.FeatureService/GetBundle`` with no request
deserializer and no response serializer: it takes the request bytes without parsing
them and returns the same response bytes every time (a real GetBundle response, so the
size matches). The server runs as livefeat's gRPC front end runs (service/server.py and
service/grpc/server.py): grpc.aio on uvloop, the same server options, and the same
choice of grpc's experiments (service/grpc_env.py). What livefeat
costs on top of this is its own work: parsing, the core, the store and the encoding.

With `--burn-us N` the handler first spins for N microseconds of the clock: a stand-in
for a handler that works that long, with no memory traffic of its own
(loadtest/grpc_share.py: what grpc.aio costs around a handler of a given cost).

    python -m loadtest.echo_grpc --port 50090 --body-file response.bin
    python -m loadtest.echo_grpc --port 50090 --size 25000 [--burn-us 100]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from service.grpc_env import choose_serving_experiments

choose_serving_experiments()  # grpc's runtime as `livefeat serve` chooses it, before import

import grpc  # noqa: E402
import uvloop  # noqa: E402

SERVICE = "livefeat.v1.FeatureService"
METHOD = "GetBundle"
MAX_MESSAGE_BYTES = 8 << 20  # livefeat's default max_body_bytes, its gRPC receive limit
GRACE_S = 20


def spin(seconds: float) -> None:
    """Busy for `seconds` of the monotonic clock (no sleep: the CPU stays in use)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def handler(body: bytes, burn_s: float = 0.0) -> grpc.GenericRpcHandler:
    """GetBundle -> ``body``, request and response as raw bytes; with `burn_s`, after
    spinning that long."""

    async def get_bundle(request: bytes, context: Any) -> bytes:
        if burn_s:
            spin(burn_s)
        return body

    return grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(get_bundle)}
    )


async def serve(body: bytes, host: str, port: int, burn_s: float = 0.0) -> None:
    """Serve until SIGTERM or SIGINT, then stop with the grace livefeat gives calls."""
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((handler(body, burn_s),))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    burn = f", after {burn_s * 1e6:g} us of spinning" if burn_s else ""
    print(f"echo_grpc: serving {len(body)} bytes on {host}:{port}{burn}", flush=True)
    await stop.wait()
    await server.stop(GRACE_S)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the flags and serve."""
    p = argparse.ArgumentParser(prog="python -m loadtest.echo_grpc", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body-file", type=Path, help="answer with the bytes of this file")
    body.add_argument("--size", type=int, help="answer with this many zero bytes")
    p.add_argument("--burn-us", type=float, default=0.0,
                   help="spin this many microseconds in each call before answering")  # fmt: skip
    args = p.parse_args(argv)
    if args.burn_us < 0:
        p.error("--burn-us: must be 0 or more")
    data = args.body_file.read_bytes() if args.body_file else bytes(args.size)
    uvloop.run(serve(data, args.host, args.port, args.burn_us / 1e6))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

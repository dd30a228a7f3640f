"""gRPC fixtures over the session's real `livefeat serve` (tests/conftest.py starts it).

Tests that write use room ids 700000 and up (HTTP tests use 500000 and up), each
test its own range, so they share the session's server without seeing each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from service._gen.livefeat.v1 import livefeat_pb2_grpc as pb_grpc
from service.client import LivefeatClient
from tests.conftest import LiveServer


@pytest.fixture(scope="session")
def channel(server: LiveServer) -> Iterator[grpc.Channel]:
    """A channel to the session server's gRPC port."""
    with grpc.insecure_channel(server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> pb_grpc.FeatureServiceStub:
    """The generated stub of livefeat.v1.FeatureService on the session server."""
    return pb_grpc.FeatureServiceStub(channel)


@pytest.fixture(scope="session")
def ranker(server: LiveServer) -> Iterator[LivefeatClient]:
    """The ranker client (service/client.py) on the session server."""
    with LivefeatClient(server.grpc_target) as c:
        yield c

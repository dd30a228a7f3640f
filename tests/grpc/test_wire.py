"""GetBundle's answer is assembled as wire bytes (service/grpc/wire.py): parsed with the
generated classes, every value must equal the HTTP answer to the same request."""

from __future__ import annotations

import random

import httpx
import pytest

from service.client import LivefeatClient
from tests.grpc.test_read import BUNDLE, MISSING_ROOM, assert_same, http_bundle

pytestmark = pytest.mark.process


def test_random_bundles_parse_to_the_http_values(
    ranker: LivefeatClient, client: httpx.Client
) -> None:
    rng = random.Random(20261129)
    for _ in range(25):
        user_id = rng.choice([rng.randint(1, 1_000), rng.randint(1_001, 2**63 - 1)])
        rooms = [rng.randint(1, 220) for _ in range(rng.randint(1, 120))]
        rooms += [MISSING_ROOM] * rng.randint(0, 2)
        rng.shuffle(rooms)
        got = ranker.get_bundle(user_id, rooms, timeout=5)
        want = http_bundle(client, user_id, rooms)
        assert (got.user_id, got.room_ids) == (user_id, rooms)
        assert list(got.user) == BUNDLE["user"] and list(got.rooms) == BUNDLE["room"]
        for view in got.user.values():
            assert_same(view, [want["user"]])
        for view in got.rooms.values():
            assert_same(view, want["rooms"])
        for view in got.pairs.values():
            assert_same(view, want["pairs"])

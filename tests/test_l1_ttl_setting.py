"""L1's TTL by mode: short with Redis, where it bounds what a lost change notification
can cost; long embedded, where no notification can be lost (service/settings.py,
`Settings.l1_ttl`; docs/design.md, "Freshness: what a read may return")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.server import build_core
from service.settings import L1_TTL_S_EMBEDDED, L1_TTL_S_REDIS, Settings
from tests.support.redis_proc import RedisServer


@pytest.fixture(autouse=True)
def _no_ttl_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEFEAT_L1_TTL_S", raising=False)


def test_the_default_is_short_with_redis_and_long_embedded() -> None:
    assert (L1_TTL_S_REDIS, L1_TTL_S_EMBEDDED) == (5.0, 60.0)
    assert Settings().l1_ttl() == 60.0
    assert Settings(redis_url="redis://127.0.0.1:6390/0").l1_ttl() == 5.0


def test_a_ttl_that_is_set_holds_in_both_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEFEAT_L1_TTL_S", "2.5")
    assert Settings().l1_ttl() == 2.5
    assert Settings(redis_url="redis://127.0.0.1:6390/0").l1_ttl() == 2.5
    assert Settings(l1_ttl_s=90).l1_ttl() == 90


def test_a_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="l1_ttl_s"):
        Settings(l1_ttl_s=0)


def test_the_served_l1_lives_the_ttl_of_its_mode(
    fresh_data_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """What `serve` builds (build_core): an embedded core's L1 and a Redis one's."""

    async def ttls() -> list[float]:
        out = []
        for settings in (
            Settings(data_dir=fresh_data_dir),
            Settings(data_dir=tmp_path / "replica", redis_url=redis_server.url),
        ):
            core = build_core(settings)
            try:
                out.append(core.store.reads.l1.ttl_s)
            finally:
                await core.store.close()
        return out

    assert asyncio.run(ttls()) == [60.0, 5.0]

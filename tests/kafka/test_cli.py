"""`livefeat consume`'s flags: topic/view pairs and storage refused with a clear message."""

from __future__ import annotations

import pytest

from service.cli import main
from service.core.registry import load_registry
from service.errors import LivefeatError
from service.kafka.run import routes_of
from service.settings import DEMO_REGISTRY, Settings
from service.store.factory import open_tiers

REGISTRY = load_registry(DEMO_REGISTRY)


def test_topics_and_views_pair_in_order() -> None:
    got = routes_of(["rooms", "pairs", "rooms-2"], ["room_stats", "user_room_affinity", "room_stats"], REGISTRY)  # fmt: skip
    assert got == {"rooms": "room_stats", "pairs": "user_room_affinity", "rooms-2": "room_stats"}


@pytest.mark.parametrize(
    ("topics", "views", "says"),
    [
        ([], [], "in pairs"),
        (["a", "b"], ["room_stats"], "in pairs: 2 topic(s), 1 view(s)"),
        (["a"], ["rooms"], "--view 'rooms': no such view"),
        (["a", "a"], ["room_stats", "user_profile"], "--topic 'a': given twice"),
    ],
)
def test_bad_pairs_are_refused_naming_the_flag(
    topics: list[str], views: list[str], says: str
) -> None:
    with pytest.raises(LivefeatError, match=says.replace("(", r"\(").replace(")", r"\)")):
        routes_of(topics, views, REGISTRY)


def test_no_storage_at_all_is_refused() -> None:
    with pytest.raises(LivefeatError, match="no storage"):
        open_tiers(Settings(), REGISTRY, rocksdb=False)


def test_the_cli_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["consume", "--kafka", "127.0.0.1:9", "--topic", "a", "--view", "nope"])
    assert code == 2
    assert "--view 'nope': no such view" in capsys.readouterr().err


def test_a_served_topic_needs_kafka(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    code = main(["serve", "--log-served-topic", "served", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "--log-served-topic needs --kafka" in capsys.readouterr().err

import pytest

from service.core.registry import load_registry, parse_registry
from service.core.status import Status
from service.errors import RegistryError
from service.settings import DEMO_REGISTRY

GOOD = """
entities:
  user: {key: user_id}
  room: {key: room_id}
  user_room: {key: [user_id, room_id]}
views:
  room_stats:
    entity: room
    max_age_s: 30
    storage_ttl_s: 86400
    features:
      viewer_count: {type: int64, default: 0}
      category: {type: string, default: ""}
      room_embedding: {type: float_vector, dim: 4}
  user_profile:
    entity: user
    max_age_s: 60
    storage_ttl_s: 86400
    features:
      country: {type: string, default: "US"}
bundles:
  live_ranker:
    user: [user_profile]
    room: [room_stats]
"""


def test_compiles_plans() -> None:
    reg = parse_registry(GOOD, "reg.yaml")
    plan = reg.bundles["live_ranker"]
    assert [v.name for v in plan.room] == ["room_stats"]
    assert plan.user_room == ()
    room = reg.views["room_stats"]
    assert room.max_age_ms == 30_000
    assert room.key_columns == ("room_id",)
    assert room.key(42) == room.key_prefix + b"42"
    assert room.status_json[Status.STALE] == b'"room_stats":"STALE"'
    assert room.codec.default_values["room_embedding"] == [0.0] * 4


def test_demo_registry_loads() -> None:
    reg = load_registry(DEMO_REGISTRY)
    assert set(reg.bundles["live_ranker"].user_room[0].key_columns) == {"user_id", "room_id"}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("type: int64, default: 0}", "type: int, default: 0}", "views.room_stats.features.viewer_count.type"),
        ("viewer_count: {type: int64, default: 0}", "viewer_count: {type: int64, default: x}",
         "views.room_stats.features.viewer_count.default: expected an integer"),
        ("{type: float_vector, dim: 4}", "{type: float_vector}", "room_embedding"),
        ("entity: room", "entity: shop", "views.room_stats.entity: unknown entity 'shop'"),
        ("max_age_s: 30", "max_age_s: -1", "views.room_stats.max_age_s"),
        ("room: [room_stats]", "room: [nope]", "bundles.live_ranker.room.0: unknown view 'nope'"),
        ("room: [room_stats]", "room: [user_profile]", "is not a room view"),
        ("viewer_count:", "event_time:", "views.room_stats.features.event_time"),
        ("    max_age_s: 30\n", "    max_age_s: 30\n    colour: red\n", "views.room_stats.colour"),
    ],
)  # fmt: skip
def test_errors_name_file_view_and_field(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(RegistryError) as info:
        parse_registry(GOOD.replace(old, new, 1), "reg.yaml")
    assert str(info.value).startswith("reg.yaml: ")
    assert message in str(info.value)


def test_not_yaml_and_missing_file(tmp_path) -> None:
    with pytest.raises(RegistryError, match="not valid YAML"):
        parse_registry("views: [", "x.yaml")
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")


def test_served_json_is_off_unless_set() -> None:
    reg = parse_registry(GOOD, "reg.yaml")
    assert not reg.views["room_stats"].codec.served
    assert not reg.views["user_profile"].codec.served
    text = GOOD.replace(
        "storage_ttl_s: 86400\n", "storage_ttl_s: 86400\n    served_json: true\n", 1
    )
    text = text.replace("max_age_s: 60\n", "max_age_s: 60\n    served_json: false\n", 1)
    reg = parse_registry(text, "reg.yaml")
    assert reg.views["room_stats"].codec.served
    assert not reg.views["user_profile"].codec.served
    # The layout, hence the keys, do not depend on it.
    assert (
        reg.views["room_stats"].key_prefix
        == parse_registry(GOOD, "r").views["room_stats"].key_prefix
    )

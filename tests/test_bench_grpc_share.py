"""loadtest.grpc_share: the gRPC echo with a spinning handler, the echoes' line and
livefeat's equivalent spin on it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from loadtest import echo_grpc, grpc_share, prepare
from loadtest.servers import echo_server


def _round(
    i: int, livefeat: float, echoes: dict[float, float], handler: float | None = None
) -> dict[str, object]:
    row: dict[str, object] = {
        "round": i,
        "livefeat": {"throughput_rps": 1000.0 + i, "cpu_ms": livefeat, "handler_ms": handler},
    }
    for burn, ms in echoes.items():
        row[grpc_share.echo_name(burn)] = {"throughput_rps": 5000.0 - burn, "cpu_ms": ms}
    return row


def test_the_line_through_the_echoes_gives_livefeats_equivalent_spin() -> None:
    rounds = [
        _round(0, 0.36, {0: 0.10, 100: 0.21, 200: 0.30}, handler=0.4),  # a cold first run
        _round(1, 0.34, {0: 0.12, 100: 0.20, 200: 0.31}, handler=0.1),
        _round(2, 0.35, {0: 0.11, 100: 0.19, 200: 0.29}, handler=0.09),  # medians: 0.11, ...
    ]
    got = grpc_share.summarize(rounds, [0, 100, 200])
    assert got["servers"]["livefeat"] == {"throughput_rps": 1001.0, "cpu_ms": 0.35}
    assert got["servers"]["echo-100us"] == {"throughput_rps": 4900.0, "cpu_ms": 0.2}
    # least squares through (0, 0.11), (100, 0.20), (200, 0.30): 0.95 us of CPU per us
    # of spin, 0.1083 ms with an idle handler; livefeat's 0.35 ms is a spin of 254 us
    assert got["line"] == {"idle_handler_ms": 0.1083, "ms_per_handler_ms": 0.95}
    assert got["equivalent_burn_us"] == pytest.approx((0.35 - 0.108333) / 0.00095, abs=0.1)
    # the median handler, 0.1 ms: an echo spinning that long would cost 0.2033 ms a call
    assert got["handler_ms"] == 0.1
    assert got["line_at_handler_ms"] == pytest.approx(0.2033, abs=1e-4)
    assert got["beyond_ms"] == pytest.approx(0.35 - 0.2033, abs=1e-4)


def test_without_the_handler_time_nothing_is_set_against_it() -> None:
    got = grpc_share.summarize([_round(0, 0.3, {0: 0.1, 100: 0.2})], [0, 100])
    assert got["handler_ms"] is got["line_at_handler_ms"] is got["beyond_ms"] is None


METRICS = """\
livefeat_request_duration_seconds_sum{code="OK",route="GetBundle",transport="grpc"} 0.6
livefeat_request_duration_seconds_count{code="OK",route="GetBundle",transport="grpc"} 5000.0
livefeat_request_duration_seconds_sum{code="200",route="/v1/bundle",transport="http"} 9.0
livefeat_request_duration_seconds_count{code="200",route="/v1/bundle",transport="http"} 10.0
livefeat_request_duration_seconds_sum{code="CANCELLED",route="GetBundle",transport="grpc"} 4.0
livefeat_request_duration_seconds_count{code="CANCELLED",route="GetBundle",transport="grpc"} 2.0
"""


def test_the_handler_time_comes_from_its_own_histogram() -> None:
    assert prepare.duration_totals(METRICS, "grpc", "GetBundle", "OK") == (0.6, 5000.0)
    assert prepare.duration_totals(METRICS, "http", "/v1/bundle", "200") == (9.0, 10.0)
    assert prepare.duration_totals(METRICS, "grpc", "GetFeatures", "OK") == (0.0, 0.0)


def test_a_line_that_does_not_rise_has_no_equivalent_spin() -> None:
    rounds = [_round(0, 0.3, {0: 0.2, 50: 0.2})]
    assert grpc_share.summarize(rounds, [0, 50])["equivalent_burn_us"] is None


def test_one_spin_a_negative_one_or_no_demo_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two different spins"):
        grpc_share.check_inputs([100, 100], tmp_path)
    with pytest.raises(ValueError, match="none below 0"):
        grpc_share.check_inputs([0, -5], tmp_path)
    with pytest.raises(ValueError, match="no demo data"):
        grpc_share.check_inputs([0, 100], tmp_path)
    out = tmp_path / "out.json"
    assert grpc_share.main(["--data-dir", str(tmp_path), "--out", str(out)]) == 2
    assert not out.exists()


def test_a_failed_run_is_an_exit_code_and_no_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(args: object) -> dict[str, object]:
        raise RuntimeError("echo-0us: 3 errors")

    monkeypatch.setattr(grpc_share, "measure", failing)
    out = tmp_path / "out.json"
    assert grpc_share.main(["--out", str(out)]) == 1
    assert "echo-0us: 3 errors" in capsys.readouterr().err
    assert not out.exists()


def test_the_spin_lasts_at_least_as_long_as_asked() -> None:
    start = time.perf_counter()
    echo_grpc.spin(0.003)
    assert time.perf_counter() - start >= 0.003


def test_only_the_grpc_echo_spins(tmp_path: Path) -> None:
    body = tmp_path / "body"
    grpc_echo = echo_server("grpc", "e", body, tmp_path / "log", burn_us=150)
    assert grpc_echo.cmd[-4:-2] == ["--burn-us", "150"]
    assert "--burn-us" not in echo_server("grpc", "e", body, tmp_path / "log").cmd
    with pytest.raises(ValueError, match="only the gRPC echo"):
        echo_server("http", "e", body, tmp_path / "log", burn_us=150)


@pytest.mark.process
def test_a_round_measures_livefeat_and_each_echo(demo_template: Path, tmp_path: Path) -> None:
    """End to end: real echoes (one spinning 300 us a call), livefeat on a clone of the
    demo data, the compiled gRPC client; the report's figures come from their runs."""
    data = tmp_path / "data"
    shutil.copytree(demo_template, data, ignore=shutil.ignore_patterns("demo-parquet"))
    out = tmp_path / "share.json"
    argv = ["--data-dir", str(data), "--burn-us", "0", "300", "--rounds", "1",
            "--duration", "1", "--warmup", "0.3", "--requests", "200", "--out", str(out)]  # fmt: skip
    assert grpc_share.main(argv) == 0
    report = json.loads(out.read_text())
    (row,) = report["rounds"]
    assert set(row) == {"round", "livefeat", "echo-0us", "echo-300us"}
    assert all(row[n]["throughput_rps"] > 0 and row[n]["cpu_ms"] > 0 for n in set(row) - {"round"})
    assert row["livefeat"]["handler_ms"] > 0  # over its run, from its own /metrics
    assert report["response"]["echo_body_bytes"] > 1000  # one of livefeat's own answers
    servers = report["summary"]["servers"]
    # 0.3 ms of spinning a call: far above what the idle echo spends on one
    assert servers["echo-300us"]["cpu_ms"] > servers["echo-0us"]["cpu_ms"]
    assert report["summary"]["equivalent_burn_us"] > 0
    assert report["summary"]["handler_ms"] > 0  # from livefeat's own /metrics
    assert isinstance(report["summary"]["beyond_ms"], float)


def test_the_clients_offered_are_the_grpc_ones_and_the_default_is_among_them() -> None:
    assert set(grpc_share.CLIENTS) == {"grpc", "native-grpc", "native-grpc-h2"}
    assert grpc_share.parser().parse_args([]).client in grpc_share.CLIENTS

"""service/grpc_env.py: grpc's experiments chosen before grpc is imported, never over an
operator's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.grpc_env import SERVING_EXPERIMENTS, choose_serving_experiments


def test_set_when_the_environment_has_none_and_grpc_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)
    monkeypatch.delitem(sys.modules, "grpc", raising=False)
    assert choose_serving_experiments() is True
    assert os.environ["GRPC_EXPERIMENTS"] == SERVING_EXPERIMENTS


@pytest.mark.parametrize("own", ["", "-event_engine_client"])
def test_an_operators_choice_is_kept(monkeypatch: pytest.MonkeyPatch, own: str) -> None:
    monkeypatch.setenv("GRPC_EXPERIMENTS", own)
    monkeypatch.delitem(sys.modules, "grpc", raising=False)
    assert choose_serving_experiments() is False
    assert os.environ["GRPC_EXPERIMENTS"] == own


def test_too_late_once_grpc_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc

    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)
    monkeypatch.setitem(sys.modules, "grpc", grpc)
    assert choose_serving_experiments() is False
    assert "GRPC_EXPERIMENTS" not in os.environ


def test_grpc_reads_the_choice_only_at_import() -> None:
    """What the module relies on: grpc takes GRPC_EXPERIMENTS when it is imported. An
    unknown experiment named before the import is reported by grpc; named after, it is
    not read at all."""
    setting = "import os; os.environ['GRPC_EXPERIMENTS'] = 'livefeat_no_such_experiment'\n"
    imported = "import grpc\n"
    server = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "grpc.server(ThreadPoolExecutor(1)).stop(None)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    outs = {}
    # "after": set once grpc is imported, still before the server is made
    for when, code in (
        ("before", setting + imported + server),
        ("after", imported + setting + server),
    ):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outs[when] = done.stderr
    assert "livefeat_no_such_experiment" in outs["before"]
    assert "livefeat_no_such_experiment" not in outs["after"]

"""The Dockerfile stays buildable by construction (there is no Docker engine here).

Every COPY source exists and is let through by .dockerignore; the context holds
everything pyproject.toml's build needs; and `pip wheel` run on exactly that
context (what `pip install .` in the build stage does first) produces a wheel
with the generated gRPC code. hadolint lints the file in `make deploy-check`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from service.settings import Settings
from tests.deploy.support import ROOT, DockerIgnore, copy_sources, dockerfile_instructions

pytestmark = pytest.mark.process  # starts processes: `pytest -m "not process"` skips it

DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore.of(ROOT)


@pytest.fixture(scope="module")
def context(ignore: DockerIgnore) -> set[str]:
    return set(ignore.context_files(ROOT))


def local_copy_sources(instructions: list[tuple[str, str]]) -> list[str]:
    """Sources of every COPY/ADD that reads the build context (not --from another stage)."""
    sources: list[str] = []
    for word, args in instructions:
        if word in ("COPY", "ADD"):
            flags, srcs, _ = copy_sources(args)
            if not any(f.startswith("--from") for f in flags):
                sources += srcs
    return sources


def test_dockerignore_matching_follows_docker() -> None:
    rules = DockerIgnore("*\n!service/\nservice/_gen/\n**/__pycache__\n!keep/**/*.txt\n")
    assert rules.excluded(".venv/bin/python")
    assert not rules.excluded("service/server.py")
    assert rules.excluded("service/_gen/livefeat/v1/livefeat_pb2.py")
    assert rules.excluded("service/http/__pycache__/app.cpython-311.pyc")
    assert not rules.excluded("keep/a/b/x.txt")
    assert rules.excluded("keep/a/b/x.py")


def test_every_copy_source_exists_and_is_in_the_context(
    instructions: list[tuple[str, str]], ignore: DockerIgnore, context: set[str]
) -> None:
    sources = local_copy_sources(instructions)
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file or directory in the repository"
        assert not ignore.excluded(source.rstrip("/")), f"COPY {source}: .dockerignore excludes it"
        if path.is_dir():
            prefix = source.rstrip("/") + "/"
            tracked = subprocess.run(["git", "ls-files", source], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout.split()  # fmt: skip
            assert any(f.startswith(prefix) for f in context), f"COPY {source}: nothing let through"
            dropped = [f for f in tracked if f not in context and not f.endswith(".pyc")]
            assert not dropped, f"COPY {source}: .dockerignore drops tracked files {dropped}"


def test_context_holds_what_the_build_reads(context: set[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"],
              project["tool"]["hatch"]["build"]["hooks"]["custom"]["path"]}  # fmt: skip
    assert needed <= context, f"missing from the build context: {needed - context}"
    for package in project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        assert f"{package}/__init__.py" in context
    assert any(f.startswith("protos/") and f.endswith(".proto") for f in context)
    assert "service/demo_registry.yaml" in context
    assert not any(f.startswith("service/_gen/") for f in context), "stale generated code leaks in"
    assert {"service/_native.c", "service/_shortest.h", "service/_table.h"} <= context
    assert not any(f.startswith("service/_native") and not f.endswith(".c") for f in context), (
        "a module compiled in the work tree leaks in"
    )


def test_image_shape(instructions: list[tuple[str, str]]) -> None:
    words = [w for w, _ in instructions]
    args = {w: a for w, a in instructions}  # the last of each
    froms = [a for w, a in instructions if w == "FROM"]
    assert len(froms) >= 2, "a multi-stage build"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms), "every stage on the same Python"
    base = next(a for w, a in instructions if w == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert base.startswith("PYTHON_IMAGE=python:3.11-slim-bookworm")
    user = args["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root USER (runAsNonRoot can check it)"
    defaults = Settings()
    assert set(args["EXPOSE"].split()) == {str(defaults.http_port), str(defaults.grpc_port)}
    assert "/healthz" in args["HEALTHCHECK"] and "curl" not in args["HEALTHCHECK"]
    assert args["STOPSIGNAL"] == "SIGTERM"
    assert "org.opencontainers.image.revision" in args["LABEL"]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")


def test_build_stage_installs_like_make(instructions: list[tuple[str, str]]) -> None:
    """The build stage runs `pip install .` (what `make install` runs, without -e and dev)."""
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install" in makefile and "-e '.[dev]'" in makefile
    runs = " ".join(a for w, a in instructions if w == "RUN" and "pip " in a)
    assert " install " in runs and runs.split(" install ")[1].split("&&")[0].rstrip().endswith(" .")
    assert "--no-cache-dir" in runs
    # service/_native.c is compiled by that install: the build stage has a C compiler.
    build_stage = instructions[: [w for w, _ in instructions].index("FROM", 2)]
    assert any(w == "RUN" and "gcc" in a for w, a in build_stage)


def test_wheel_builds_from_the_build_context(
    context: set[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What `pip install .` builds first, from exactly the files Docker would send."""
    root = tmp_path_factory.mktemp("docker-context")
    ctx, out = root / "ctx", root / "dist"
    for rel in context:
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, ctx / rel)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "-q", "-w", str(out), str(ctx)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"pip wheel on the build context failed:\n{done.stderr[-4000:]}"
    (wheel,) = out.glob("livefeat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("service/_gen/livefeat/v1/livefeat_pb2.py",
                   "service/_gen/livefeat/v1/livefeat_pb2_grpc.py",
                   "service/demo_registry.yaml", "service/server.py"):  # fmt: skip
        assert needed in names, f"the wheel lacks {needed}"
    # The compiled hot path (hatch_build.py): in the wheel, which is tagged for this platform.
    assert any(n.startswith("service/_native.") and n.endswith(".so") for n in names), names
    assert not wheel.name.endswith("-none-any.whl"), wheel.name

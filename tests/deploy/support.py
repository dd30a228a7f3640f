"""Helpers for the deploy checks: the Docker build context, rendered manifests, metric names.

- `DockerIgnore`: .dockerignore's matching as Docker does it (moby's patternmatcher):
  patterns in order, the last one that matches a path or one of its parent
  directories wins, `!` re-includes, `**` spans directories.
- `dockerfile_instructions`: a Dockerfile as (INSTRUCTION, arguments) pairs.
- `render`: `kubectl kustomize DIR` parsed into objects; fails clearly without kubectl.
- `exposed_metric_names`: every series name livefeat's REGISTRY can expose.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
# The custom resources of the Prometheus Operator: no JSON schema ships with
# kubernetes-validate, so test_manifests.py checks their structure itself.
OPERATOR_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
                  ("monitoring.coreos.com/v1", "PrometheusRule")}  # fmt: skip
METRIC_NAME = re.compile(r"\blivefeat_[a-z0-9_]+")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match syntax plus `**`, as a regex matched against a whole path."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


class DockerIgnore:
    """The rules of one .dockerignore file."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, str, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = posixpath.normpath(line[1:].strip() if negate else line).lstrip("/")
            self.rules.append((negate, pattern, _pattern_regex(pattern)))

    @classmethod
    def of(cls, root: Path = ROOT) -> DockerIgnore:
        path = root / ".dockerignore"
        return cls(path.read_text() if path.exists() else "")

    def excluded(self, path: str) -> bool:
        """Whether the file or directory `path` (relative, with /) stays out of the context."""
        parts = path.strip("/").split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        verdict = False
        for negate, _, regex in self.rules:
            if any(regex.fullmatch(c) for c in candidates):
                verdict = not negate
        return verdict

    def _may_reinclude_under(self, directory: str) -> bool:
        return any(negate and (p.startswith(directory + "/") or p.startswith("*"))
                   for negate, p, _ in self.rules)  # fmt: skip

    def context_files(self, root: Path = ROOT) -> Iterator[str]:
        """Every file Docker would send as the build context of `root`."""
        for top, dirs, files in os.walk(root):
            rel_top = Path(top).relative_to(root).as_posix()
            prefix = "" if rel_top == "." else rel_top + "/"
            dirs[:] = [d for d in dirs if not (self.excluded(prefix + d)
                                               and not self._may_reinclude_under(prefix + d))]  # fmt: skip
            for name in files:
                if not self.excluded(prefix + name):
                    yield prefix + name


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # comments may sit inside continuations
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def copy_sources(arguments: str) -> tuple[list[str], list[str], str]:
    """A COPY/ADD's (--flags, sources, destination), in shell or JSON form."""
    words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    flags = [w for w in words if w.startswith("--")]
    rest = [w for w in words if not w.startswith("--")]
    if arguments.startswith("["):  # in JSON form the flags come first, outside the array
        flags = []
    return flags, rest[:-1], rest[-1]


def tool(name: str, hint: str) -> str:
    """The path of a program the deploy checks need; fails (never skips) if it is missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: {hint}")
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, as a list of objects."""
    kubectl = tool("kubectl", "it renders deploy/ (Kustomize); see scripts/system-deps.sh kubectl")
    done = subprocess.run([kubectl, "kustomize", str(directory)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    if done.returncode:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def exposed_metric_names() -> set[str]:
    """Every series name service/metrics.py's REGISTRY can expose (with _total, _bucket...)."""
    from service import metrics

    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        base = family.name
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
            "gauge": ("",),
        }.get(family.type, ("",))
        names |= {base + s for s in suffixes}
    return names

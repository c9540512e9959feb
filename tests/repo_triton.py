"""A tritonserver of its own on a temporary model repository the test changes (explicit
model-control mode, as EmbeddedTriton always starts): the example ``fraud`` model with version 1
only (its config keeps every version loaded: ``version_policy: all``). For the auto-shadow tests,
which drop and remove version folders and must not disturb the session Triton."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from shadowgrpc.local import EmbeddedTriton, example_repository
from tests.fixtures_triton import require_pytriton


def fraud_v1_triton(tmp_path_factory: pytest.TempPathFactory, label: str) -> Iterator[tuple[EmbeddedTriton, object]]:
    """Yield (server, repository path) for a module fixture; the server is stopped afterwards."""
    require_pytriton()
    repo = tmp_path_factory.mktemp(f"{label}-repo")
    src = example_repository() / "fraud"
    (repo / "fraud").mkdir()
    shutil.copy(src / "config.pbtxt", repo / "fraud" / "config.pbtxt")
    shutil.copytree(src / "1", repo / "fraud" / "1", ignore=shutil.ignore_patterns("__pycache__"))
    server = EmbeddedTriton(repo, log_path=tmp_path_factory.mktemp(f"{label}-triton") / "tritonserver.log")
    server.start()
    try:
        yield server, repo
    finally:
        server.stop()

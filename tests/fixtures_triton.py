"""pytest plugin (registered in tests/conftest.py): the real embedded Triton.

(Named fixtures_triton, not triton: tests/triton/ is the package of the tests that use this server
through the front.)

Fixtures
--------
``triton_repo`` (session)
    A temp model repository: the shipped example repository (fraud 1+2, basket_value 1+2,
    merchant_intent 1+2) plus the test-only models of ``tests/models`` (fraud_faulty,
    fraud_sleepy, fraud_garbage, fraud_loose, fraud_recorder, fraud_slow5x, fraud_nan,
    fraud_batched, fraud_f64, fraud_renamed, fraud_sentinel, seq_sum 1+2, tokens 1+2, text_echo 1+2,
    text_stream 1+2).
``triton`` (session)
    One real tritonserver on loopback serving ``triton_repo``, started once per session and always
    stopped at the end (even when tests fail). Its Python-backend models see
    ``SHADOWGRPC_PREFERENCE_CACHE`` and ``SHADOWGRPC_RECORDER_PATH`` (files in a session temp dir)
    and ``SHADOWGRPC_SLEEPY_SECONDS=2``. Yields a :class:`TritonFixture`.

Tests that use them are marked ``@pytest.mark.triton``. Without nvidia-pytriton (the ``local``
extra) the ``triton`` fixture fails with an explanation: it does not skip, so a CI that lost the
extra goes red instead of silently green. It fails the same way when the test models could not
import this checkout's ``shadowgrpc`` (fraud_recorder and fraud_sleepy extend the example fraud
model.py, which they find through ``shadowgrpc.examples``): the Python-backend stub runs an
isolated interpreter of this environment (no ``PYTHONPATH``, no working directory), so shadowgrpc
must be installed in it, editable (``pip install -e .``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import tritonclient.grpc

    from shadowgrpc.local import EmbeddedTriton

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEST_MODELS = ROOT / "tests" / "models"
SLEEPY_SECONDS = 2.0
EXAMPLE_MODELS = [  # (name, version) of the shipped example repository, all in ``triton_repo``
    ("fraud", "1"),
    ("fraud", "2"),
    ("basket_value", "1"),
    ("basket_value", "2"),
    ("merchant_intent", "1"),
    ("merchant_intent", "2"),
]


@dataclasses.dataclass(frozen=True)
class TritonFixture:
    """What the ``triton`` fixture yields."""

    grpc_address: str
    http_address: str
    preference_cache: pathlib.Path
    recorder_path: pathlib.Path
    repository: pathlib.Path
    sleepy_seconds: float
    server: EmbeddedTriton

    def client(self) -> tritonclient.grpc.InferenceServerClient:
        """A new tritonclient gRPC client on this server (close it: ``with triton.client() as c``)."""
        import tritonclient.grpc

        return tritonclient.grpc.InferenceServerClient(url=self.grpc_address)


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    """All JSON lines of ``path`` ([] when it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def require_pytriton() -> None:
    """Fail (not skip) the calling test or fixture when the embedded Triton cannot run."""
    if importlib.util.find_spec("pytriton") is None:
        pytest.fail(
            "nvidia-pytriton is not installed, so the embedded tritonserver cannot start. Tests marked "
            "'triton' need the 'local' extra: pip install -e '.[local,test]' (nvidia-pytriton==0.7.0, numpy<2). "
            "Deselect them with -m 'not triton' if you mean to run without Triton.",
            pytrace=False,
        )


def require_models_import_this_checkout() -> None:
    """Fail (not skip) when an isolated interpreter of this environment, like the Python-backend
    stub's, does not import ``shadowgrpc.examples`` from this checkout."""
    expected = ROOT / "shadowgrpc" / "examples" / "__init__.py"
    code = "import shadowgrpc.examples as e; print(e.__file__)"
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd="/", check=False)
    found = proc.stdout.strip() if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]
    if proc.returncode != 0 or pathlib.Path(found).resolve() != expected:
        pytest.fail(
            f"the Python-backend test models need this checkout's shadowgrpc ({expected}); an isolated "
            f"{sys.executable} gets: {found}. Install it editable: pip install -e '.[local,test]'.",
            pytrace=False,
        )


def copy_models(dst: pathlib.Path, *sources: pathlib.Path, only: Iterable[str] | None = None) -> pathlib.Path:
    """Copy the model directories of each source repository (all, or those named in ``only``)
    into ``dst``, without __pycache__."""
    wanted = None if only is None else set(only)
    dst.mkdir(parents=True, exist_ok=True)
    for source in sources:
        for model in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if wanted is None or model.name in wanted:
                shutil.copytree(model, dst / model.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from shadowgrpc.local import example_repository

    return copy_models(tmp_path_factory.mktemp("triton-repo"), example_repository(), TEST_MODELS)


@pytest.fixture(scope="session")
def triton(triton_repo: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonFixture]:
    require_pytriton()
    require_models_import_this_checkout()
    from shadowgrpc.local import EmbeddedTriton

    state = tmp_path_factory.mktemp("triton-state")
    preference_cache = state / "preference_cache.jsonl"
    recorder_path = state / "recorder.jsonl"
    server = EmbeddedTriton(
        triton_repo,
        log_path=state / "tritonserver.log",
        env={
            "SHADOWGRPC_PREFERENCE_CACHE": str(preference_cache),
            "SHADOWGRPC_RECORDER_PATH": str(recorder_path),
            "SHADOWGRPC_SLEEPY_SECONDS": str(SLEEPY_SECONDS),
        },
    )
    try:
        server.start()
        yield TritonFixture(
            grpc_address=server.grpc_address,
            http_address=server.http_address,
            preference_cache=preference_cache,
            recorder_path=recorder_path,
            repository=triton_repo,
            sleepy_seconds=SLEEPY_SECONDS,
            server=server,
        )
    finally:
        server.stop()

"""Shared fixtures and hooks: the implementation switch (compiled vs pure-Python twin), after
aio-libs/propcache's tests/conftest.py, and the real embedded Triton (the plugin
tests/fixtures_triton.py).

Layout: tests/unit/ needs no Triton; tests/triton/ runs the front against the session Triton
(fixture ``triton``); tests/local/ tests the embedded Triton launcher, its models and the demo.
Helpers shared by several test modules (and benchmarks/) live at tests/ top level: fakes.py,
frontctl.py, kserve.py, latency_driver.py, otlp.py, paired.py, wire.py."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

pytest_plugins = ("tests.fixtures_triton",)

NO_EXTENSIONS = bool(os.environ.get("SHADOWGRPC_NO_EXTENSIONS"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="run the tests against the pure-Python twins only",
    )


def _c_disabled(config: pytest.Config) -> bool:
    return NO_EXTENSIONS or bool(config.getoption("--no-c-extensions"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _c_disabled(config):
        return
    skip = pytest.mark.skip(reason="compiled extensions disabled (SHADOWGRPC_NO_EXTENSIONS / --no-c-extensions)")
    for item in items:
        if "c_extension" in item.keywords:
            item.add_marker(skip)


def _impl_params(config: pytest.Config) -> list:
    return ["py"] if _c_disabled(config) else ["c", "py"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `packing_impl` yields the compiled module or the Python twin; a test that takes it runs twice.
    if "packing_impl" in metafunc.fixturenames:
        metafunc.parametrize("packing_impl", _impl_params(metafunc.config), indirect=True)
    if "sketches_impl" in metafunc.fixturenames:
        metafunc.parametrize("sketches_impl", _impl_params(metafunc.config), indirect=True)


@pytest.fixture
def packing_impl(request: pytest.FixtureRequest) -> ModuleType:
    name = "shadowgrpc._packing_c" if request.param == "c" else "shadowgrpc._packing_py"
    return importlib.import_module(name)


@pytest.fixture
def sketches_impl(request: pytest.FixtureRequest) -> ModuleType:
    name = "shadowgrpc.sketches._c" if request.param == "c" else "shadowgrpc.sketches._py"
    return importlib.import_module(name)

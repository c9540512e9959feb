"""The files the embedded Triton runs: the tritonserver distribution of the nvidia-pytriton wheel
(copied once into a cache directory, with the Python backend stub of this interpreter), the
environment it runs in, and the example model repository shipped in this package.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import shutil
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Mapping

from .log import TritonNotInstalledError
from ..examples import MODEL_REPOSITORY

_STATE_FILE = ".shadowgrpc-complete"


def example_repository() -> pathlib.Path:
    """The example model repository shipped in the package (fraud, basket_value, merchant_intent)."""
    return MODEL_REPOSITORY


def _pytriton_root() -> pathlib.Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(
            "nvidia-pytriton is not installed: it ships the tritonserver binary that the embedded "
            "Triton runs. Install the 'local' extra: pip install 'shadowgrpc[local]' "
            "(nvidia-pytriton==0.7.0, numpy<2)."
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations))).resolve()


def _libs_path() -> pathlib.Path:
    try:
        from pytriton.utils.distribution import get_libs_path

        return pathlib.Path(get_libs_path())
    except Exception:  # pragma: no cover - fallback if pytriton's layout changes
        return _pytriton_root().parent / "nvidia_pytriton.libs"


def _pytriton_version() -> str:
    try:
        return importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - editable/odd installs
        return "unknown"


def _cache_root() -> pathlib.Path:
    candidates = []
    if os.environ.get("XDG_CACHE_HOME"):
        candidates.append(pathlib.Path(os.environ["XDG_CACHE_HOME"]) / "shadowgrpc")
    with contextlib.suppress(RuntimeError):
        candidates.append(pathlib.Path.home() / ".cache" / "shadowgrpc")
    candidates.append(pathlib.Path(tempfile.gettempdir()) / f"shadowgrpc-{os.getuid()}")
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    raise OSError(f"no writable cache directory among {[str(c) for c in candidates]}")


def prepare_server_dir() -> pathlib.Path:
    """Return a ready tritonserver directory (``bin/``, ``backends/``, ``caches/``) for this Python.

    Built once per (nvidia-pytriton version, Python major.minor) by copying the wheel's
    ``pytriton/tritonserver`` and adding the matching Python backend stub; built in a temp dir and
    renamed into place, so concurrent callers never see a half-built directory.
    """
    src = _pytriton_root() / "tritonserver"
    version, py = _pytriton_version(), f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not (src / "bin" / "tritonserver").is_file():
        raise TritonNotInstalledError(f"no tritonserver binary in {src} (nvidia-pytriton install is incomplete)")
    if not stub.is_file():
        raise TritonNotInstalledError(f"nvidia-pytriton {version} has no Python backend stub for Python {py} ({stub})")
    cache = _cache_root()
    target = cache / f"tritonserver-{version}-py{py}"
    if (target / _STATE_FILE).is_file():
        return target

    for stale in cache.glob(".tritonserver-build-*"):  # left by a process killed mid-copy
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tritonserver-build-", dir=cache))
    try:
        shutil.copytree(
            src,
            tmp,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"),
        )
        dst_stub = tmp / "backends" / "python" / "triton_python_backend_stub"
        shutil.copy2(stub, dst_stub)
        dst_stub.chmod(0o755)
        (tmp / "bin" / "tritonserver").chmod(0o755)
        (tmp / _STATE_FILE).write_text(json.dumps({"source": str(src), "pytriton": version, "python": py}) + "\n")
        for _ in range(2):
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if (target / _STATE_FILE).is_file():  # another process won the race
                    return target
                if target.exists():  # a stale, incomplete directory: move it aside, retry once
                    with contextlib.suppress(OSError):
                        os.rename(target, cache / f".stale-{target.name}-{os.getpid()}-{time.time_ns()}")
                    continue
                raise
        raise OSError(f"could not install the tritonserver directory at {target}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """tritonserver's environment: ours, plus ``extra``, with the libraries of the wheel and of this
    Python on ``LD_LIBRARY_PATH`` and this Python first on ``PATH``."""
    env = dict(os.environ)
    env.update(extra)
    lib_dirs = [str(_libs_path())]
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (pathlib.Path(libdir) / soname).exists():
        lib_dirs.insert(0, libdir)  # the stub links the running Python's libpython first
    if env.get("LD_LIBRARY_PATH"):
        lib_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
    # Python-backend models run the first `python3` environment on PATH: this one (numpy<2).
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    env["PATH"] = os.pathsep.join([bin_dir] + [p for p in env.get("PATH", "").split(os.pathsep) if p])
    env.pop("PYTHONHOME", None)
    return env


def has_nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version")


def check_numpy() -> None:
    try:
        major = int(importlib.metadata.version("numpy").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return
    if major >= 2:
        warnings.warn(
            "numpy >= 2 is installed in the environment that the embedded Triton's Python-backend "
            "models run in: with numpy 2 the backend stub of nvidia-pytriton 0.7.0 was seen to return "
            "empty outputs without any error. Install numpy<2 (the 'local' extra pins it).",
            RuntimeWarning,
            stacklevel=3,
        )

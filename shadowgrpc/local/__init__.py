"""The embedded Triton: a real ``tritonserver`` (2.51, CPU, Python backend) started from the
``nvidia-pytriton`` wheel (the ``local`` extra), for demos, tests and benchmarks.

Nothing else in shadowgrpc depends on this module: in production the service talks to the user's
own Triton (GPU, any backend) over gRPC.

How the server is started
-------------------------
* The wheel's ``pytriton/tritonserver`` directory (binary, Python backend, local cache) is copied
  once into a cache directory (``$XDG_CACHE_HOME/shadowgrpc/tritonserver-<pytriton>-py<X.Y>``,
  else ``~/.cache/...``, else the temp dir) with the Python backend stub matching the running
  interpreter added as ``backends/python/triton_python_backend_stub``. The copy is built in a temp
  dir and renamed into place, so concurrent first starts are safe; site-packages is never modified.
* ``LD_LIBRARY_PATH`` gets the wheel's bundled libraries (``nvidia_pytriton.libs``) and the
  running interpreter's ``libpython``; ``PATH`` starts with the directory of ``sys.executable`` so
  that the Python-backend models run in this environment (which must have ``numpy<2``: with
  numpy 2 a Python-backend model returned empty outputs without any error).
* Model control mode is ``explicit`` with ``--load-model=*``: every model of the repository is
  loaded at start, and the ``RepositoryModelLoad`` / ``RepositoryModelUnload`` RPCs work (in the
  default ``none`` mode they are refused).
* gRPC, HTTP and metrics listen on 127.0.0.1 only, on free ports unless given.
* The server runs in its own session / process group (Python-backend stub processes are its
  children), with ``PR_SET_PDEATHSIG=SIGKILL`` so that it dies with its parent (even one killed
  with SIGKILL); ``stop()`` sends SIGTERM, waits, then SIGKILLs the whole group; running servers
  are stopped at interpreter exit. The stubs exit on their own ~0.3 s after tritonserver is gone
  (they poll ``kill(ppid, 0)``), which needs the dead server to be reaped: by its parent (stop()),
  or by init once the parent is dead (in a container, run an init that reaps, e.g. ``--init``).

Environment
-----------
* read: ``XDG_CACHE_HOME`` (where the tritonserver copy goes).
* given to tritonserver and its models: this process's environment, plus ``env=``, plus
  ``PATH`` (``sys.executable``'s directory first) and ``LD_LIBRARY_PATH`` (libpython and the
  wheel's libraries first). The backend stub embeds Python with an *isolated* config, so
  ``PYTHON*`` variables do not reach the models (the stub writes ``__pycache__`` next to each
  ``model.py`` whatever ``PYTHONDONTWRITEBYTECODE`` says); plain variables do.
* the example models read ``SHADOWGRPC_PREFERENCE_CACHE`` (merchant_intent's side-effect file);
  the test models read ``SHADOWGRPC_RECORDER_PATH`` and ``SHADOWGRPC_SLEEPY_SECONDS``: pass them
  with ``env=`` (or ``shadowgrpc triton --env KEY=VALUE``).

Good to know: startup takes ~2 s for one Python-backend model and ~6-8 s for the example
repository plus the test models on 2 CPU cores (one stub process per model instance, each
importing numpy); a graceful stop takes 2-4 s (tritonserver polls its model unloads once per
second). On a host without an NVIDIA driver the log has harmless CUDA warnings ("Unable to
allocate pinned system memory", "CudaDriverHelper has not been initialized").

Use::

    from shadowgrpc.local import EmbeddedTriton, example_repository

    with EmbeddedTriton(example_repository()) as triton:
        client = tritonclient.grpc.InferenceServerClient(triton.grpc_address)
        ...

or from the command line: ``shadowgrpc triton --model-repository DIR``.

Where the code is: ``dist`` (the tritonserver directory, its environment, the example
repository), ``proc`` (process group, no orphans), ``launcher`` (EmbeddedTriton: ports,
launch, readiness), ``log`` (the errors and the log lines they quote), ``cli``
(``shadowgrpc triton``).
"""

from __future__ import annotations

from .cli import add_triton_parser
from .dist import example_repository, prepare_server_dir
from .log import TritonNotInstalledError, TritonStartError
from .launcher import EmbeddedTriton

__all__ = [
    "EmbeddedTriton",
    "TritonNotInstalledError",
    "TritonStartError",
    "add_triton_parser",
    "example_repository",
    "prepare_server_dir",
]

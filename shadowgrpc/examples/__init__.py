"""The example model repository shipped with shadowgrpc, and its synthetic traffic.

``model_repository/`` holds Python-backend models (numpy only) for the embedded Triton
(``shadowgrpc triton``, :func:`shadowgrpc.local.example_repository`):

* ``fraud`` versions 1 (live) and 2 (retrained shadow candidate): card-fraud probabilities that
  disagree on known slices (:mod:`shadowgrpc.examples.data` documents them);
* ``basket_value`` versions 1 and 2: a regression;
* ``merchant_intent`` versions 1 and 2: BYTES input, with a side effect that shadow requests skip.

:mod:`shadowgrpc.examples.data` generates traffic with known ground truth and computes, with numpy,
exactly what each model version answers.
"""

import importlib.util
import pathlib
import types

MODEL_REPOSITORY = pathlib.Path(__file__).resolve().parent / "model_repository"

__all__ = ["MODEL_REPOSITORY", "load_model_module"]


def load_model_module(name: str) -> types.ModuleType:
    """The example model ``name``'s model.py as a module (one file serves every version), for
    test models that extend an example model (tests/models/*): they run in Triton's Python-backend
    stub, where only the installed shadowgrpc is importable. The module imports
    ``triton_python_backend_utils``, so this works inside the stub only."""
    path = MODEL_REPOSITORY / name / "1" / "model.py"
    spec = importlib.util.spec_from_file_location(f"shadowgrpc_example_{name}_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

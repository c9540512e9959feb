"""The example model repository shipped with shadowgrpc, and its synthetic traffic.

``model_repository/`` holds Python-backend models (numpy only) for the embedded Triton
(``shadowgrpc triton``, :func:`shadowgrpc.triton.example_repository`):

* ``fraud`` versions 1 (live) and 2 (retrained shadow candidate): card-fraud probabilities that
  disagree on known slices (:mod:`shadowgrpc.examples.data` documents them);
* ``basket_value`` versions 1 and 2: a regression;
* ``merchant_intent`` versions 1 and 2: BYTES input, with a side effect that shadow requests skip.

:mod:`shadowgrpc.examples.data` generates traffic with known ground truth and computes, with numpy,
exactly what each model version answers.
"""

import pathlib

MODEL_REPOSITORY = pathlib.Path(__file__).resolve().parent / "model_repository"

__all__ = ["MODEL_REPOSITORY"]

"""shadowgrpc: a gRPC front for NVIDIA Triton that answers from the live model and mirrors each
request to shadow models, whose answers are compared and never returned."""

__version__ = "0.1.0"

__all__ = ["__version__"]

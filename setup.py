"""Builds the Cython extensions in ext/ (everything else is in pyproject.toml).

SHADOWGRPC_NO_EXTENSIONS=1 skips them: the pure-Python twins are used at run time.
"""

import os
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("SHADOWGRPC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

# The sketches match their numpy twin to the last bit: one rounding per operation, no fused
# multiply-add (GCC and Clang contract a * b + c by default where the target has FMA).
EXACT_FP = [] if sys.platform == "win32" else ["-ffp-contract=off"]
# The subpackage shadowgrpc.sketches, built from ext/shadowgrpc/sketches/ (its Python twins sit in
# shadowgrpc/sketches/).
SKETCHES = ("_c", "_core_c", "_divergence_c", "_paired_c", "_text_c")  # _text_c: edit distance (shadowgrpc/text.py selects it)


def nghttp2_found() -> bool:
    """libnghttp2's header and library (Debian: libnghttp2-dev, installed by `make sysdeps`).
    Without them the HTTP/2 data plane (shadowgrpc._h2_c) is not built and the front uses
    grpc.aio (server.data_plane = "auto"); SHADOWGRPC_REQUIRE_NGHTTP2=1 makes that an error."""
    import subprocess

    try:
        subprocess.run(["pkg-config", "--exists", "libnghttp2"], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        pass
    return any(os.path.exists(f"{d}/nghttp2/nghttp2.h") for d in ("/usr/include", "/usr/local/include"))

if NO_EXTENSIONS:
    print("*********************\n* Pure Python build *\n*********************")
    ext_modules = []
else:
    print("**********************\n* Accelerated build *\n**********************")
    import numpy
    from Cython.Build import cythonize

    # numpy's C API (sketches._core_c reads arrays with it): built against numpy 2 (build-system
    # requires), an extension also runs on numpy 1.x (numpy's default NPY_TARGET_VERSION).
    numpy_api = {"include_dirs": [numpy.get_include()], "define_macros": [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]}
    extensions = [Extension(f"shadowgrpc.{m}", [f"ext/shadowgrpc/{m}.pyx"]) for m in ("_packing_c", "_packing_build_c")]
    extensions += [Extension(f"shadowgrpc.sketches.{m}", [f"ext/shadowgrpc/sketches/{m}.pyx"], extra_compile_args=EXACT_FP,
                             **numpy_api)
                   for m in SKETCHES]
    if nghttp2_found():
        extensions.append(Extension("shadowgrpc._h2_c", ["ext/shadowgrpc/_h2_c.pyx"], libraries=["nghttp2"]))
        extensions.append(Extension("shadowgrpc._h2srv_c", ["ext/shadowgrpc/_h2srv_c.pyx"], libraries=["nghttp2"]))  # issue 14 item 4 prototype
    elif os.environ.get("SHADOWGRPC_REQUIRE_NGHTTP2"):
        sys.exit("setup.py: libnghttp2 not found (Debian: apt-get install libnghttp2-dev) and SHADOWGRPC_REQUIRE_NGHTTP2 is set")
    else:
        print("setup.py: libnghttp2 not found: shadowgrpc._h2_c (the HTTP/2 data plane) is not built; the front uses grpc.aio")
    ext_modules = cythonize(
        extensions,
        include_path=["ext"],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )

setup(ext_modules=ext_modules)

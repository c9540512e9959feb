"""Builds the Cython extensions in ext/ (everything else is in pyproject.toml).

SHADOWGRPC_NO_EXTENSIONS=1 skips them: the pure-Python twins are used at run time.
"""

import os
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("SHADOWGRPC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

if NO_EXTENSIONS:
    print("*********************\n* Pure Python build *\n*********************")
    ext_modules = []
else:
    print("**********************\n* Accelerated build *\n**********************")
    from Cython.Build import cythonize

    extensions = [
        Extension("shadowgrpc._packing_c", ["ext/shadowgrpc/_packing_c.pyx"]),
        Extension("shadowgrpc._sketches_c", ["ext/shadowgrpc/_sketches_c.pyx"]),
    ]
    ext_modules = cythonize(
        extensions,
        include_path=["ext"],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )

setup(ext_modules=ext_modules)

"""Builds the two wire extensions (_packing_c, _packing_build_c) instrumented for the fuzzer, with
Debian's clang: libFuzzer coverage (``-fsanitize=fuzzer-no-link``), AddressSanitizer and
UndefinedBehaviorSanitizer (every finding aborts), into build-fuzz/ only: the in-place build the
tests use is not touched. Run by ``make fuzz`` (tests/fuzz/run_fuzz.py):

    CC=clang LDSHARED="clang -shared" python tests/fuzz/setup_fuzz.py build_ext \
        --build-lib build-fuzz/lib --build-temp build-fuzz/tmp
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(ROOT)
SANITIZE = "-fsanitize=fuzzer-no-link,address,undefined"
FLAGS = [SANITIZE, "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"]

extensions = [
    Extension(f"shadowgrpc.{m}", [f"ext/shadowgrpc/{m}.pyx"], extra_compile_args=FLAGS, extra_link_args=[SANITIZE])
    for m in ("_packing_c", "_packing_build_c")
]
setup(
    name="shadowgrpc-fuzz",
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        build_dir="build-fuzz/c",  # the generated C too stays out of ext/
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        quiet=True,
    ),
    script_args=None,
)

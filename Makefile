# Every target does its own set-up: a fresh Debian machine with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/shadowgrpc/v1/*.proto)

.PHONY: all install build nghttp2-dev proto check-proto test test-py demo bench sysdeps trace-screenshot browser report-screenshot spark-check soak fuzz clean

all: install

$(STAMP): pyproject.toml setup.py | nghttp2-dev
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[local,test,bench,dev,html]'
	touch $(STAMP)

install: $(STAMP) build

# (Re)build the Cython extensions in place; `pip install .` does the same for a wheel.
# SHADOWGRPC_REQUIRE_NGHTTP2: here a missing libnghttp2 is an error, not a grpc.aio-only build.
build: $(STAMP) nghttp2-dev
	SHADOWGRPC_REQUIRE_NGHTTP2=1 $(PY) setup.py --quiet build_ext --inplace

# Debian's libnghttp2-dev (the compiled HTTP/2 data plane's C library and header), when missing.
nghttp2-dev:
	dpkg-query -W -f='$${Status}' libnghttp2-dev 2>/dev/null | grep -q 'ok installed' || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libnghttp2-dev; }

# The generated code in shadowgrpc/v1 comes only from here; never edit it by hand.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# Fails when the committed generated code differs from what the pinned grpcio-tools emits.
check-proto: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	for f in $$tmp/shadowgrpc/v1/*; do \
	  diff -u shadowgrpc/v1/$$(basename $$f) $$f || { echo "check-proto: shadowgrpc/v1/$$(basename $$f) is stale: run 'make proto' and commit"; exit 1; }; \
	done && rm -rf $$tmp && echo "check-proto: generated code is up to date"

# The whole suite with the compiled extensions, then again with the pure-Python twins selected
# by SHADOWGRPC_NO_EXTENSIONS (the compiled-only tests are deselected there, not skipped).
test: install check-proto browser
	$(PY) -m pytest
	SHADOWGRPC_NO_EXTENSIONS=1 $(PY) -m pytest -m "not c_extension and not once" -p no:cacheprovider

demo: install
	$(VENV)/bin/shadowgrpc demo

# Debian packages, each installed when missing: libnghttp2-dev (above) and nginx (front_overhead.py's
# nginx-pass / nginx-mirror rows).
sysdeps: nghttp2-dev
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx; }

# Every benchmark, each printing its table and ratios; JSON figures land in bench-results/.
bench: sysdeps install
	mkdir -p bench-results
	$(PY) benchmarks/packing_micro.py --json bench-results/packing_micro.json
	$(PY) benchmarks/sketches.py --json bench-results/sketches.json
	$(PY) benchmarks/h2_spike.py --json bench-results/h2_spike.json
	$(PY) benchmarks/front_overhead.py --json bench-results/front_overhead.json
	$(PY) benchmarks/h2_server_spike.py --json bench-results/h2_server_spike.json
	$(PY) benchmarks/front_overhead.py --tracing --json bench-results/tracing.json
	$(PY) benchmarks/latency_gate.py --json bench-results/latency_gate.json
	$(PY) benchmarks/pairlog.py --json bench-results/pairlog.json
	$(PY) benchmarks/client_mirror.py --json bench-results/client_mirror.json
	$(PY) benchmarks/faults.py --json bench-results/faults.json
	$(PY) benchmarks/capacity.py --json bench-results/capacity.json

# The soak (not in CI; ~12 min): 600 s at a steady rate, after 60 s of warm-up, through a
# `shadowgrpc serve` front whose shadow tritonserver is SIGKILLed and restarted every minute;
# RSS growth <= 20 MB, no fd growth and zero live errors printed as PASS/FAIL (benchmarks/soak.py).
soak: install
	mkdir -p bench-results
	$(PY) benchmarks/soak.py --json bench-results/soak.json

# Coverage-guided fuzzing of the compiled wire code (not in CI; ~3-5 min): atheris (libFuzzer) drives
# tests/fuzz/fuzz_wire.py over the scanners, builder and packer built with Debian's clang into
# build-fuzz/ (libFuzzer coverage + ASan + UBSan; the in-place build is untouched), each result
# compared with the Python twin. FUZZ_RUNS executions; any crash, sanitizer report or difference fails.
FUZZ_RUNS ?= 1000000
fuzz: $(STAMP)
	command -v clang >/dev/null && test -e "$$(clang -print-resource-dir)/share/asan_ignorelist.txt" || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang libclang-rt-dev; }
	$(PY) -c 'import atheris' 2>/dev/null || $(PIP) install --quiet atheris
	$(PY) tests/fuzz/run_fuzz.py --runs $(FUZZ_RUNS)

# Headless Chromium (Debian's package): tests/local/test_report_html_chromium.py renders the HTML report in it.
browser:
	command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The HTML report of a short demo run (embedded Triton, the example config), rendered by headless
# Chromium to shadowgrpc/examples/report.png (the README's screenshot).
report-screenshot: install browser
	$(PY) shadowgrpc/examples/report_screenshot.py --out shadowgrpc/examples/report.png

# A real demo trace in a real viewer: Phoenix (own venv, ~850 MB, kept out of the test set-up) and
# headless Chromium (Debian's package), writing shadowgrpc/examples/demo-trace.png.
VIEWER ?= .venv-viewer
trace-screenshot: install
	command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	test -x $(VIEWER)/bin/phoenix || { $(PYTHON) -m venv $(VIEWER) && $(VIEWER)/bin/pip install --quiet arize-phoenix; }
	$(PY) shadowgrpc/examples/trace_screenshot.py --phoenix $(VIEWER)/bin/phoenix --out shadowgrpc/examples/demo-trace.png

# DuckDB == Spark: every query of shadowgrpc/analysis/sql.py, unchanged, on pyspark (local[2], loopback)
# and on DuckDB over one real paired log (embedded Triton, a logging front), and the report from
# each (benchmarks/spark_check.py). Java 17+ from Debian's packages, pyspark (the spark extra) in the
# venv, each when missing. Not part of `make test`: ~1 min on 2 idle cores (7 under load), +2 min to install pyspark.
spark-check: install
	java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])' || { mkdir -p /usr/share/man/man1 && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless; }
	$(PY) -c 'import pyspark' 2>/dev/null || $(PIP) install --quiet 'pyspark>=3.5'
	$(PY) benchmarks/spark_check.py

clean:
	rm -rf build $(VENV) *.egg-info shadowgrpc/*.so shadowgrpc/sketches/*.so ext/shadowgrpc/*.c ext/shadowgrpc/sketches/*.c .pytest_cache .hypothesis build-fuzz

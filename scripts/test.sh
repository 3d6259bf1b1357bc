#!/usr/bin/env bash
# The whole test suite: Rust unit, integration, golden-vector and property tests, then the
# interop tests against real llama.cpp (llama-cpp-python) and the HF tokenizers.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --release"
cargo test --release

echo "== Python requirements for the interop tests"
# llama-cpp-python builds llama.cpp from source (a few minutes, once). A portable AVX2 build:
# the CPU backend's AMX/AVX-512 repacking paths crash on quantized models on some Xeons, and a
# fixed instruction set keeps results the same on every machine.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt

echo "== llama.cpp's llama-imatrix and llama-quantize (built once from the same llama.cpp)"
bash scripts/build_llama_tools.sh

echo "== interop with llama.cpp"
cargo build --release --quiet
python3 tests/interop/run.py --qforge target/release/qforge --llama-tools target/llama-tools

echo "== the Python wheel (built with pip wheel, installed from the .whl: the qforge command and the numpy API)"
# built from this tree and installed into a fresh virtualenv, as a user would
rm -rf target/wheel-venv
# (Debian/Ubuntu ship venv separately: fall back to virtualenv from PyPI)
python3 -m venv target/wheel-venv 2>/dev/null || {
    rm -rf target/wheel-venv
    python3 -m pip install --quiet --disable-pip-version-check virtualenv
    python3 -m virtualenv --quiet target/wheel-venv
}
# the wheel file is built first and that file installed, as a user installs a downloaded wheel
rm -rf target/wheels
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps ./python -w target/wheels
target/wheel-venv/bin/python -m pip install --quiet --disable-pip-version-check target/wheels/qforge-*.whl gguf==0.19.0 pytest
PATH="$PWD/target/wheel-venv/bin:$PATH" target/wheel-venv/bin/python -m pytest -q -p no:cacheprovider tests/python

#!/usr/bin/env bash
# Build llama.cpp's llama-imatrix and llama-quantize from the llama.cpp that the installed
# llama-cpp-python vendors (the PyPI sdist of the same version), into target/llama-tools.
# Kept between runs: rebuilt only when the llama-cpp-python version changes.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(python3 -c "import llama_cpp; print(llama_cpp.__version__)")
out=target/llama-tools
if [ -x "$out/llama-quantize" ] && [ -x "$out/llama-imatrix" ] && [ "$(cat "$out/VERSION" 2>/dev/null)" = "$version" ]; then
    echo "llama.cpp tools $version already built in $out"
    exit 0
fi
command -v cmake >/dev/null || python3 -m pip install --quiet --disable-pip-version-check cmake
work=target/llama-src
rm -rf "$work"
mkdir -p "$work" "$out"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -d "$work"
tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# the same portable CPU flags scripts/test.sh builds llama-cpp-python with
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF > "$work/cmake.log"
cmake --build "$work/build" --target llama-imatrix llama-quantize -j "$(nproc)" > "$work/build.log"
cp "$work/build/bin/llama-imatrix" "$work/build/bin/llama-quantize" "$out/"
echo "$version" > "$out/VERSION"
rm -rf "$work"
echo "built llama-imatrix and llama-quantize $version into $out"

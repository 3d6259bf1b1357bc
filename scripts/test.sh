#!/usr/bin/env bash
# The whole test suite: Rust unit, integration and golden-vector tests, then the llama.cpp
# interop tests (which install their Python requirements first, once).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --release

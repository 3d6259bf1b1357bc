"""qforge: Hugging Face safetensors -> quantized GGUF for llama.cpp, and GGUF files read back.

The command line (`qforge convert|inspect|verify|edit|diff|split`) is the Rust CLI itself;
`convert` is `qforge convert` as a function returning its `--json` summary; `GGUFFile` reads a GGUF file (memory-mapped) with its metadata as Python values and tensors as
numpy arrays; `quantize`/`dequantize` run qforge's block kernels on numpy float32 arrays.
"""
import signal
import sys

from ._qforge import (
    Cancelled,
    ConversionError,
    GGUFFile,
    GGUFFormatError,
    QforgeError,
    QforgeOSError,
    QuantizationError,
    SourceError,
    convert,
    dequantize,
    quantize,
    run_cli,
    type_size,
)

__all__ = ["Cancelled", "ConversionError", "GGUFFile", "GGUFFormatError", "QforgeError", "QforgeOSError",
           "QuantizationError", "SourceError", "convert", "dequantize", "inspect", "main", "quantize",
           "run_cli", "type_size"]


def inspect(path, full=False):
    """The `qforge inspect --json` document of a GGUF file, as a dict."""
    with GGUFFile(path) as f:
        return f.inspect(full)


def main():
    """The `qforge` console command."""
    # Python's own SIGINT handler only sets a flag the Rust code never looks at: give Ctrl-C
    # back its default action (the CLI's writers leave nothing under the output name).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(run_cli(sys.argv))

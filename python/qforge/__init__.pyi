from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypedDict, Union

from typing_extensions import NotRequired

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]

class QforgeError(Exception):
    """Any qforge failure. The message is what the command line prints after ``error: ``: it
    names the file, tensor or key, and the byte offset where one is known."""

class GGUFFormatError(QforgeError):
    """A malformed or hostile GGUF file (from ``GGUFFile`` or as ``convert``'s input): the check
    that failed. The message reads ``PATH: byte OFFSET: WHAT``."""
    path: Optional[Path]
    """The file, where known."""
    offset: Optional[int]
    """Byte offset (from the start of the file) of the item that failed the check."""

class SourceError(QforgeError):
    """A checkpoint problem: a safetensors header, config.json, tokenizer files, an unsupported
    architecture, a model id absent from the local Hugging Face cache, an importance-matrix
    file."""

class ConversionError(QforgeError):
    """The conversion cannot be planned or run as asked: an unknown type or recipe, a bad
    override pattern, conflicting options, a non-finite value in a tensor (named, with its
    element index)."""

class QuantizationError(QforgeError):
    """A block kernel refused its input (``quantize``/``dequantize``/``type_size``: unknown type,
    not a whole number of blocks, a non-contiguous array) or a tensor during ``convert``."""

class Cancelled(QforgeError):
    """``convert``'s progress callback returned False; nothing was left under the output name."""

class QforgeOSError(QforgeError, OSError):
    """An I/O failure: a file missing or unreadable, an output location unwritable or full.
    ``errno`` is set where the system gave one; the message is qforge's (it names the file)."""

class Summary(TypedDict):
    """What ``qforge convert --json`` prints."""
    output: str
    """The output path, as given (of a split output: its first shard)."""
    shards: NotRequired[list[str]]
    """Every shard of a split output, in order (absent for one file)."""
    tensors: int
    bytes_in: int
    """Bytes of tensor data read from the source."""
    bytes_out: int
    """Bytes of tensor data written (with alignment padding)."""
    seconds: float
    """Wall time of the run (planning excluded)."""
    gb_per_s: float
    """``bytes_in / seconds / 1e9``."""
    peak_rss_mib: Optional[float]
    """The process's peak resident set size (Linux), None elsewhere."""

class GGUFFile:
    """A GGUF file, memory-mapped and checked by qforge's strict reader (raises
    ``GGUFFormatError`` or ``QforgeOSError``). The first shard of a split set opens the whole
    set (every shard checked; ``tensors``, ``raw`` and ``dequantize`` span all of them); a
    later shard opens alone."""
    def __init__(self, path: _Path) -> None: ...
    def __enter__(self) -> "GGUFFile": ...
    def __exit__(self, *args: Any) -> bool: ...
    def __len__(self) -> int: ...
    def __contains__(self, name: str) -> bool: ...
    @property
    def path(self) -> Path: ...
    @property
    def shards(self) -> list[Path]:
        """The shard files of a split set opened from its first shard; empty for one file."""
    @property
    def version(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata as Python values, in file order."""
    def value_type(self, key: str) -> str:
        """The GGUF value type of a key: ``UINT32``, ``STRING``, ``ARRAY[STRING]``, ..."""
    @property
    def tensors(self) -> list[dict[str, Any]]:
        """One dict per tensor in file order: name, type (``Q4_K``...), shape (numpy order,
        ``()`` for a tensor stored without dimensions), n_bytes, offset (from the start of the
        data section)."""
    def dequantize(self, name: str) -> npt.NDArray[np.float32]:
        """The tensor's values as float32, shaped in numpy order (KeyError for an unknown name)."""
    def raw(self, name: str) -> npt.NDArray[np.uint8]:
        """The stored bytes: a read-only uint8 view of the mapping (no copy)."""
    def verify(self) -> dict[str, Any]:
        """Re-hash every tensor: ``{"has_hashes", "hashed", "mismatched": [names]}``."""
    def inspect(self, full: bool = False) -> dict[str, Any]:
        """The ``qforge inspect --json`` document."""

def convert(
    src: _Path,
    dst: _Path,
    type: Optional[str] = None,
    *,
    threads: Optional[int] = None,
    imatrix: Optional[_Path] = None,
    include_weights: Optional[Sequence[str]] = None,
    exclude_weights: Optional[Sequence[str]] = None,
    overrides: Optional[Mapping[str, str]] = None,
    pure: bool = False,
    output_tensor_type: Optional[str] = None,
    token_embedding_type: Optional[str] = None,
    pre_tokenizer: Optional[str] = None,
    split_max_size: Optional[Union[int, str]] = None,
    split_max_tensors: Optional[int] = None,
    progress: Union[bool, Callable[[int, int], Optional[bool]]] = True,
) -> Summary:
    """Convert ``src`` to the GGUF file ``dst`` exactly as ``qforge convert`` does (the same
    bytes) and return the summary ``qforge convert --json`` prints.

    ``src``: a Hugging Face model folder, a ``.safetensors`` file, a ``.gguf`` file (re-typed),
    or a model id (``owner/name``) in the local Hugging Face cache (never the network).
    ``type``: the recipe (``f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k_s q3_k_m q3_k_l q4_k
    q4_k_s q4_k_m q5_k_s q5_k_m q6_k iq4_nl iq4_xs nf4``); None keeps the source precision.
    ``overrides``: ``{regex: type}`` searched in GGUF tensor names, first match wins
    (``--tensor-type``); ``pure``, ``output_tensor_type``, ``token_embedding_type``,
    ``pre_tokenizer`` (``--pre``), ``imatrix``, ``include_weights``, ``exclude_weights`` and
    ``threads`` (None: all cores; the bytes do not depend on it) are the CLI's options.

    ``split_max_size`` (bytes, or ``"500M"``/``"4G"``: decimal units) or ``split_max_tensors``
    write a split set as ``llama-gguf-split`` does: ``dst`` without ``.gguf`` names the shards
    ``dst-00001-of-0000N.gguf`` …; the summary's ``output`` is the first shard (the one
    llama.cpp loads) and ``shards`` lists them all. A ``.gguf`` ``src`` with ``type=None``
    keeps every tensor byte for byte: the first shard of a split set is merged into ``dst``,
    and with a split limit any GGUF file or set is re-split.

    ``progress``: True draws the CLI's progress bar on stderr when it is a terminal (and prints
    the plan's notes there); False draws nothing; a callable is called as
    ``progress(done_bytes, total_bytes)`` after every written chunk (from the writing thread,
    with the GIL held; ``done_bytes`` increases strictly and ends at ``total_bytes``, which
    is the summary's ``bytes_out``). Returning ``False`` (exactly; None or other values go on)
    cancels with ``Cancelled``; an exception raised by the callback cancels and is re-raised.

    The GIL is released while converting. Ctrl-C stops the run with KeyboardInterrupt. A run
    that does not finish (cancelled, interrupted, failed) leaves nothing under ``dst`` and no
    temporary file beside it.

    Raises ``SourceError``, ``ConversionError``, ``GGUFFormatError``, ``QuantizationError``,
    ``Cancelled`` or ``QforgeOSError`` with the CLI's message."""

def quantize(values: npt.NDArray[np.float32], type: str) -> npt.NDArray[np.uint8]:
    """Quantize C-contiguous float32 values (a whole number of blocks) to ``type``'s blocks,
    byte-identical to ggml's quantizer."""
def dequantize(data: npt.NDArray[np.uint8], type: str) -> npt.NDArray[np.float32]:
    """Dequantize a 1-D contiguous uint8 array of whole ``type`` blocks to float32."""
def type_size(type: str) -> tuple[int, int]:
    """(values per block, bytes per block)."""
def run_cli(args: list[str]) -> int:
    """Run the qforge command line (``args[0]`` is the program name); returns the exit code."""
def inspect(path: _Path, full: bool = False) -> dict[str, Any]:
    """The ``qforge inspect --json`` document of a GGUF file."""
def main() -> None:
    """The ``qforge`` console command."""

"""The installed `qforge` wheel (pip install ./python), checked with pytest against the wheel's
own `qforge` command and gguf-py:

- `qforge.convert` writes the same bytes as `qforge convert` for every tiny fixture and several
  types and options, and returns the summary `convert --json` prints;
- its progress callback sees monotonic byte counts ending at the total, returning False or
  raising cancels, Ctrl-C stops it, and none of these leaves a file behind;
- `GGUFFile` reads metadata, value types and tensor infos exactly as gguf-py does, and
  `.dequantize` agrees with `gguf.quants.dequantize` for every type qforge writes that gguf-py
  reads; malformed files raise `GGUFFormatError` carrying the offset;
- `quantize`/`dequantize` agree with gguf-py's numpy reference; errors are typed and their
  messages are the CLI's.

    python -m pytest tests/python   (after pip install ./python gguf==0.19.0 pytest)
"""
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as T

import qforge

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "fixtures", "tiny-qwen2")
TINY = sorted(glob.glob(os.path.join(ROOT, "fixtures", "tiny-*")))
SUMMARY_KEYS = {"output", "tensors", "bytes_in", "bytes_out", "seconds", "gb_per_s", "peak_rss_mib"}


def qforge_exe():
    exe = shutil.which("qforge")
    assert exe is not None, "the wheel installs a qforge command"
    return exe


def cli(*args):
    """Run the wheel's `qforge` command; returns the CompletedProcess."""
    return subprocess.run([qforge_exe(), *map(str, args)], capture_output=True, text=True)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def entries(folder):
    return sorted(os.listdir(folder))


def padded_bytes(path):
    f = qforge.GGUFFile(path)
    a = f.alignment
    return sum((t["n_bytes"] + a - 1) // a * a for t in f.tensors)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A q8_0 file written by the CLI and a q4_k_m file written by the API."""
    tmp = tmp_path_factory.mktemp("wheel")
    q8, q4k = str(tmp / "q8.gguf"), str(tmp / "q4k.gguf")
    r = cli("convert", FIXTURE, "-t", "q8_0", "--quiet", "-o", q8)
    assert r.returncode == 0, r.stderr
    qforge.convert(FIXTURE, q4k, "q4_k_m", progress=False)
    return {"tmp": tmp, "q8": q8, "q4k": q4k}


# ---------------------------------------------------------------------------------------------
# convert


def test_fixtures_are_all_there():
    assert len(TINY) == 13, TINY


@pytest.mark.parametrize("recipe", ["f16", "q8_0", "q4_k_m"])
@pytest.mark.parametrize("fixture", TINY, ids=os.path.basename)
def test_convert_is_byte_identical_to_the_cli(tmp_path, fixture, recipe):
    by_cli, by_api = tmp_path / "cli.gguf", tmp_path / "api.gguf"
    r = cli("convert", fixture, "-t", recipe, "--json", "--quiet", "-o", by_cli)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    summary = qforge.convert(fixture, by_api, recipe, progress=False)
    assert read(by_api) == read(by_cli)
    assert set(summary) == set(doc) == SUMMARY_KEYS
    assert summary["output"] == str(by_api)
    n = len(qforge.GGUFFile(str(by_api)))
    assert summary["tensors"] == doc["tensors"] == n > 0
    assert summary["bytes_out"] == doc["bytes_out"] == padded_bytes(str(by_api))
    assert summary["bytes_in"] == doc["bytes_in"] > 0
    assert summary["seconds"] > 0
    assert summary["gb_per_s"] == pytest.approx(summary["bytes_in"] / summary["seconds"] / 1e9)
    assert summary["peak_rss_mib"] > 1.0


def test_convert_options_are_the_clis(tmp_path):
    src = os.path.join(ROOT, "fixtures", "tiny-llama-bpe")
    opts = dict(overrides={r"ffn_down": "q8_0", r"attn_v": "q6_k"}, output_tensor_type="q5_0",
                token_embedding_type="q4_1", pre_tokenizer="smollm", threads=1)
    flags = ["--tensor-type", "ffn_down=q8_0", "--tensor-type", "attn_v=q6_k", "--output-tensor-type", "q5_0",
             "--token-embedding-type", "q4_1", "--pre", "smollm", "--threads", "1"]
    r = cli("convert", src, "-t", "q4_k_m", "--quiet", "-o", tmp_path / "cli.gguf", *flags)
    assert r.returncode == 0, r.stderr
    qforge.convert(src, tmp_path / "api.gguf", "q4_k_m", progress=False, **opts)
    assert read(tmp_path / "api.gguf") == read(tmp_path / "cli.gguf")
    f = qforge.GGUFFile(str(tmp_path / "api.gguf"))
    types = {t["name"]: t["type"] for t in f.tensors}
    assert types["blk.0.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.attn_v.weight"] == "Q6_K"
    assert types["token_embd.weight"] == "Q4_1"
    assert f.metadata["tokenizer.ggml.pre"] == "smollm"
    # pure: every quantizable tensor gets the base type
    r = cli("convert", src, "-t", "q4_k_m", "--pure", "--quiet", "-o", tmp_path / "cli-pure.gguf")
    assert r.returncode == 0, r.stderr
    qforge.convert(src, tmp_path / "api-pure.gguf", "q4_k_m", pure=True, progress=False)
    assert read(tmp_path / "api-pure.gguf") == read(tmp_path / "cli-pure.gguf")
    assert read(tmp_path / "api-pure.gguf") != read(tmp_path / "api.gguf")
    # no type: the source precision; a GGUF source is re-typed
    qforge.convert(src, tmp_path / "src.gguf", progress=False)
    r = cli("convert", src, "--quiet", "-o", tmp_path / "cli-src.gguf")
    assert read(tmp_path / "src.gguf") == read(tmp_path / "cli-src.gguf")
    qforge.convert(tmp_path / "src.gguf", tmp_path / "re.gguf", "q8_0", progress=False)
    r = cli("convert", tmp_path / "src.gguf", "-t", "q8_0", "--quiet", "-o", tmp_path / "cli-re.gguf")
    assert r.returncode == 0, r.stderr
    assert read(tmp_path / "re.gguf") == read(tmp_path / "cli-re.gguf")


def write_legacy_imatrix(path, gguf_path, rng):
    """A llama-imatrix legacy .dat file with one entry per 2-D weight of `gguf_path`."""
    f = qforge.GGUFFile(gguf_path)
    weights = [t for t in f.tensors if len(t["shape"]) == 2 and t["name"].startswith("blk.")]
    b = struct.pack("<i", len(weights))
    for t in weights:
        name = t["name"].encode()
        vals = rng.lognormal(0.0, 1.0, t["shape"][-1]).astype("<f4")
        b += struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, len(vals)) + vals.tobytes()
    with open(path, "wb") as fh:
        fh.write(b)


def test_convert_with_imatrix_is_the_clis(tmp_path):
    src = os.path.join(ROOT, "fixtures", "tiny-llama-spm")
    qforge.convert(src, tmp_path / "f16.gguf", "f16", progress=False)
    imat = tmp_path / "m.dat"
    write_legacy_imatrix(imat, str(tmp_path / "f16.gguf"), np.random.default_rng(7))
    for extra, kw in (([], {}), (["--include-weights", "ffn"], {"include_weights": ["ffn"]}),
                      (["--exclude-weights", "attn"], {"exclude_weights": ["attn"]})):
        r = cli("convert", src, "-t", "q4_k_m", "--quiet", "--imatrix", imat, *extra, "-o", tmp_path / "cli.gguf")
        assert r.returncode == 0, r.stderr
        qforge.convert(src, tmp_path / "api.gguf", "q4_k_m", imatrix=imat, progress=False, **kw)
        assert read(tmp_path / "api.gguf") == read(tmp_path / "cli.gguf"), extra
    qforge.convert(src, tmp_path / "plain.gguf", "q4_k_m", progress=False)
    assert read(tmp_path / "plain.gguf") != read(tmp_path / "api.gguf"), "the matrix changes the bytes"
    with pytest.raises(qforge.ConversionError) as e:
        qforge.convert(src, tmp_path / "x.gguf", "q4_k_m", imatrix=imat, include_weights=["a"],
                       exclude_weights=["b"])
    assert str(e.value) == "--include-weights and --exclude-weights cannot be used together"


def test_convert_from_the_hf_cache(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc123"
    shutil.copytree(FIXTURE, snap)
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    s = qforge.convert("acme/tiny", tmp_path / "api.gguf", "q8_0", progress=False)
    r = cli("convert", "acme/tiny", "-t", "q8_0", "--quiet", "-o", tmp_path / "cli.gguf")
    assert r.returncode == 0, r.stderr
    assert read(tmp_path / "api.gguf") == read(tmp_path / "cli.gguf")
    assert s["tensors"] == len(qforge.GGUFFile(str(tmp_path / "api.gguf")))
    with pytest.raises(qforge.SourceError) as e:
        qforge.convert("acme/absent", tmp_path / "x.gguf", progress=False)
    r = cli("convert", "acme/absent", "-o", tmp_path / "x.gguf")
    assert r.returncode == 1 and r.stderr == f"error: {e.value}\n"
    assert "huggingface-cli download" in str(e.value)


def test_progress_callback_sees_every_byte(tmp_path):
    calls = []

    def progress(done, total):
        calls.append((done, total))  # returns None: go on

    s = qforge.convert(FIXTURE, tmp_path / "o.gguf", "q8_0", threads=2, progress=progress)
    assert len(calls) >= s["tensors"]
    totals = {t for _, t in calls}
    assert totals == {s["bytes_out"]}
    done = [d for d, _ in calls]
    assert all(a < b for a, b in zip(done, done[1:])), "strictly increasing"
    assert done[0] > 0 and done[-1] == s["bytes_out"]
    assert entries(tmp_path) == ["o.gguf"]


def test_progress_false_cancels_and_leaves_nothing(tmp_path):
    calls = []

    def progress(done, total):
        calls.append(done)
        return len(calls) < 3  # True, True, False

    with pytest.raises(qforge.Cancelled) as e:
        qforge.convert(FIXTURE, tmp_path / "o.gguf", "q8_0", progress=progress)
    assert isinstance(e.value, qforge.QforgeError)
    assert "returned False" in str(e.value)
    assert len(calls) == 3, "no call after the one that returned False"
    assert entries(tmp_path) == [], "neither the output nor a temporary file"
    # falsy values other than False go on
    s = qforge.convert(FIXTURE, tmp_path / "o.gguf", "q8_0", progress=lambda d, t: 0)
    assert s["bytes_out"] == padded_bytes(str(tmp_path / "o.gguf"))


def test_progress_exception_propagates_and_leaves_nothing(tmp_path, files):
    class Boom(Exception):
        pass

    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise Boom(f"at {done} of {total}")

    with pytest.raises(Boom) as e:
        qforge.convert(FIXTURE, tmp_path / "o.gguf", "q4_k_m", progress=progress)
    assert str(e.value) == f"at {calls[1]} of {padded_bytes(files['q4k'])}"
    assert len(calls) == 2
    assert entries(tmp_path) == []


def test_progress_argument_is_checked(tmp_path):
    with pytest.raises(TypeError):
        qforge.convert(FIXTURE, tmp_path / "o.gguf", "q8_0", progress="yes")
    assert entries(tmp_path) == []


def test_ctrl_c_in_process_cancels_and_leaves_nothing(tmp_path):
    # The callback delivers SIGINT to this process and then stalls the writer, so the waiting
    # thread sees the signal while the run is still going.
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)

    with pytest.raises(KeyboardInterrupt):
        qforge.convert(FIXTURE, tmp_path / "o.gguf", "q4_k_m", progress=progress)
    assert len(calls) == 1, "the writer stopped at the chunk after the signal"
    assert entries(tmp_path) == []


def test_ctrl_c_stops_a_long_conversion(tmp_path):
    """A real SIGINT to a Python process converting a 128 MiB tensor: KeyboardInterrupt, and
    nothing left in the output folder."""
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    st = src_dir / "big.safetensors"
    w = np.random.default_rng(1).standard_normal((8192, 4096), dtype=np.float32)
    write_safetensors(st, {"w": w})
    script = textwrap.dedent(f"""
        import qforge, sys
        seen = [0, 0]
        def progress(done, total):
            seen[:] = [done, total]
        try:
            qforge.convert({str(st)!r}, {str(out_dir / 'o.gguf')!r}, "q4_k", threads=1, progress=progress)
        except KeyboardInterrupt:
            print("interrupted", *seen, flush=True)
            sys.exit(3)
        print("finished", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    def temp_bytes():  # the temporary file's size once data is flowing into it
        sizes = [0]
        for n in os.listdir(out_dir):
            try:
                sizes.append(os.path.getsize(out_dir / n) if n.endswith(".tmp") else 0)
            except FileNotFoundError:  # renamed or removed meanwhile
                pass
        return max(sizes)

    while temp_bytes() < 1 << 20:
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    stopped_in = time.monotonic() - t0
    word, done, total = out.split()
    assert (p.returncode, word) == (3, "interrupted"), err
    assert 0 < int(done) < int(total), "stopped before the last chunk"
    assert stopped_in < 5, stopped_in
    assert entries(out_dir) == []


def write_safetensors(path, tensors):
    header, data = {}, b""
    for name, a in tensors.items():
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}[a.dtype]
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


# ---------------------------------------------------------------------------------------------
# errors


def test_exception_hierarchy():
    for cls in (qforge.GGUFFormatError, qforge.SourceError, qforge.ConversionError, qforge.QuantizationError,
                qforge.Cancelled, qforge.QforgeOSError):
        assert issubclass(cls, qforge.QforgeError), cls
        assert cls.__module__ == "qforge"
        assert cls.__doc__
    assert issubclass(qforge.QforgeOSError, OSError)
    assert not issubclass(qforge.GGUFFormatError, OSError)
    assert not issubclass(qforge.Cancelled, KeyboardInterrupt)


def test_convert_errors_are_typed_and_say_what_the_cli_says(tmp_path):
    nan = tmp_path / "nan.safetensors"
    w = np.zeros((4, 32), np.float32)
    w[2, 5] = np.nan
    write_safetensors(nan, {"w": w})
    cases = [
        ((tmp_path / "nowhere",), {}, [], qforge.SourceError),
        ((os.path.join(ROOT, "README.md"),), {}, [], qforge.SourceError),
        ((FIXTURE, "q9_9"), {}, ["-t", "q9_9"], None),  # clap rejects it: usage error
        ((FIXTURE, "q8_0"), {"overrides": {"(": "q8_0"}}, ["-t", "q8_0", "--tensor-type", "(=q8_0"],
         qforge.ConversionError),
        ((FIXTURE, "q8_0"), {"overrides": {"x": "q9"}}, ["-t", "q8_0", "--tensor-type", "x=q9"],
         qforge.ConversionError),
        ((nan, "q8_0"), {}, ["-t", "q8_0"], qforge.ConversionError),
        ((FIXTURE, "q8_0"), {"imatrix": tmp_path / "none.dat"}, ["-t", "q8_0", "--imatrix", tmp_path / "none.dat"],
         qforge.QforgeOSError),
    ]
    for args, kw, flags, cls in cases:
        out = tmp_path / "out" / "x.gguf"
        out.parent.mkdir(exist_ok=True)
        with pytest.raises(qforge.QforgeError) as e:
            qforge.convert(args[0], out, *args[1:], progress=False, **kw)
        if cls is None:
            assert type(e.value) is qforge.ConversionError and "q9_9" in str(e.value)
            continue
        assert type(e.value) is cls, (args, kw, e.value)
        r = cli("convert", args[0], *flags, "-o", out)
        assert r.returncode == 1 and r.stderr == f"error: {e.value}\n", (r.stderr, str(e.value))
        assert entries(out.parent) == []
    # an output folder that does not exist: an OSError
    with pytest.raises(OSError) as e:
        qforge.convert(FIXTURE, tmp_path / "no" / "such" / "x.gguf", "q8_0", progress=False)
    assert isinstance(e.value, qforge.QforgeOSError)
    assert "x.gguf" in str(e.value)
    with pytest.raises(qforge.ConversionError) as e:
        qforge.convert(FIXTURE, tmp_path / "x.gguf", "q8_0", output_tensor_type="q7", progress=False)
    assert "q7" in str(e.value)


def test_errors_name_the_cause(files):
    tmp = files["tmp"]
    with pytest.raises(qforge.QforgeOSError) as e:
        qforge.GGUFFile(os.path.join(tmp, "missing.gguf"))
    assert "missing.gguf" in str(e.value)
    bad = os.path.join(tmp, "bad.gguf")
    with open(bad, "wb") as dst:
        dst.write(read(files["q8"])[:100])
    with pytest.raises(qforge.GGUFFormatError) as e:
        qforge.GGUFFile(bad)
    assert "bad.gguf" in str(e.value)
    with pytest.raises(qforge.QuantizationError) as e:
        qforge.quantize(np.zeros(100, np.float32), "q4_k")
    assert "256" in str(e.value)
    with pytest.raises(qforge.QuantizationError) as e:
        qforge.quantize(np.zeros(256, np.float32), "q9_9")
    assert "q9_9" in str(e.value)
    with pytest.raises(qforge.QforgeError):
        qforge.convert(os.path.join(tmp, "nowhere"), os.path.join(tmp, "x.gguf"))
    assert not os.path.exists(os.path.join(tmp, "x.gguf"))


class B:
    """A GGUF byte builder (as tests/gguf_reader_checks.rs's)."""

    def __init__(self, version=3, n_tensors=0, n_kv=0):
        self.b = bytearray(b"GGUF") + struct.pack("<IQQ", version, n_tensors, n_kv)

    def str(self, s):
        s = s.encode()
        self.b += struct.pack("<Q", len(s)) + s
        return self

    def kv_u32(self, k, v):
        self.str(k)
        self.b += struct.pack("<II", 4, v)
        return self

    def tensor(self, name, dims, ty, offset):
        self.str(name)
        self.b += struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        self.b += struct.pack("<IQ", ty, offset)
        return self

    def pad(self, align=32):
        self.b += b"\0" * (-len(self.b) % align)
        return self

    def zeros(self, n):
        self.b += b"\0" * n
        return self


def hostile_files():
    """(name, bytes, offset, text in the message)"""
    out = []
    out.append(("bad-magic", b"GGUX" + bytes(20), 0, "bad magic"))
    out.append(("version-1", bytes(B(version=1).b), 4, "version 1 is no longer supported"))
    out.append(("byte-swapped", bytes(B(version=0x03000000).b), 4, "big-endian"))
    out.append(("huge-tensor-count", bytes(B(n_tensors=1 << 60).b), 8, "tensor count"))
    out.append(("huge-kv-count", bytes(B(n_kv=1 << 40).b), 16, "metadata count"))
    b = B(n_kv=1)
    b.b += struct.pack("<Q", 1 << 50) + bytes(64)  # a key length longer than the file
    out.append(("huge-key", bytes(b.b), 24, "metadata key: length 1125899906842624 exceeds the limit"))
    b = B(n_kv=1)
    b.b += struct.pack("<Q", 1000) + bytes(64)
    out.append(("long-key", bytes(b.b), 32, "metadata key needs 1000 bytes but only 64 remain"))
    b = B(n_kv=2).kv_u32("a", 1).kv_u32("a", 2)
    out.append(("duplicate-key", bytes(b.b), 24 + 8 + 1 + 8, "duplicate metadata key 'a'"))
    b = B(n_kv=1).str("k")
    b.b += struct.pack("<I", 99) + bytes(16)
    out.append(("bad-value-type", bytes(b.b), 24 + 9, "invalid value type id 99"))
    b = B(n_tensors=2)
    b.tensor("blk.0.attn_q.weight", [16], 0, 0)
    b.tensor("blk.0.attn_k.weight", [16], 0, 96).pad().zeros(128)
    out.append(("bad-offset", bytes(b.b), 118, "offset 96 but expected 64 (the running padded sum)"))
    b = B(n_tensors=1).tensor("t", [32], 77, 0).pad().zeros(128)
    type_at = 24 + 9 + 4 + 8  # the type id field of the first tensor info
    out.append(("unknown-type", bytes(b.b), type_at, "unknown or removed ggml type id 77"))
    b = B(n_tensors=1).tensor("t", [1 << 20], 0, 0).pad().zeros(64)
    out.append(("data-out-of-bounds", bytes(b.b), 24, "past the end of the"))  # the tensor info
    b = B(n_tensors=1).tensor("t", [100], 8, 0).pad().zeros(256)  # q8_0 needs multiples of 32
    out.append(("block-mismatch", bytes(b.b), type_at, "is not a multiple of Q8_0's block size 32"))
    return out


@pytest.mark.parametrize("name,data,offset,text", hostile_files(), ids=[h[0] for h in hostile_files()])
def test_hostile_gguf_raises_gguf_format_error_with_offset(tmp_path, name, data, offset, text):
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(data)
    with pytest.raises(qforge.GGUFFormatError) as e:
        qforge.GGUFFile(str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: byte {offset}: "), msg
    assert text in msg, msg
    assert e.value.offset == offset
    assert os.fspath(e.value.path) == str(path)
    r = cli("inspect", path)
    assert r.returncode == 1 and msg in r.stderr, r.stderr
    if data.startswith(b"GGUF"):
        # the same check when the file is a conversion's input
        with pytest.raises(qforge.GGUFFormatError) as e2:
            qforge.convert(path, tmp_path / "o.gguf", "f16", progress=False)
        assert str(e2.value) == msg
        assert not (tmp_path / "o.gguf").exists()


def test_every_truncation_of_a_file_is_a_format_error(files, tmp_path):
    data = read(files["q8"])
    cuts = sorted(set(list(range(0, 200)) + list(range(200, len(data), max(1, len(data) // 300)))))
    n = 0
    for cut in cuts:
        p = tmp_path / "cut.gguf"
        p.write_bytes(data[:cut])
        with pytest.raises(qforge.GGUFFormatError) as e:
            qforge.GGUFFile(str(p))
        assert e.value.offset is not None and e.value.offset <= cut, (cut, str(e.value))
        assert f"byte {e.value.offset}: " in str(e.value)
        n += 1
    assert n > 400


# ---------------------------------------------------------------------------------------------
# reading


def value_type_of(field, ours):
    t = field.types
    if len(t) == 1 and t[0].name == "ARRAY":
        # gguf-py records no element type for an empty array
        assert field.contents() == [] and ours.startswith("ARRAY[")
        return ours
    return t[0].name if len(t) == 1 else f"ARRAY[{t[1].name}]"


def check_against_gguf_py(path):
    f = qforge.GGUFFile(path)
    r = gguf.GGUFReader(path)
    theirs = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
    ours = f.metadata
    assert list(ours) == list(theirs)
    for k, field in theirs.items():
        v = field.contents()
        vt = f.value_type(k)
        assert vt == value_type_of(field, vt), k
        if "FLOAT" in vt:
            # exact, NaN equal to NaN; F32 values compared as float32
            dtype = np.float64 if "FLOAT64" in vt else np.float32
            np.testing.assert_array_equal(np.asarray(ours[k], dtype), np.asarray(v, dtype), k)
        else:
            assert ours[k] == v, k
            assert type(ours[k]) is type(v), k
    assert f.version == r.fields["GGUF.version"].contents()
    assert f.alignment == r.alignment
    assert len(f) == len(r.tensors)
    for info, t in zip(f.tensors, r.tensors):
        assert info["name"] == t.name
        assert info["type"] == t.tensor_type.name
        assert tuple(info["shape"]) == tuple(int(d) for d in reversed(t.shape))
        assert info["n_bytes"] == t.n_bytes
        assert info["offset"] == t.data_offset - r.data_offset
        np.testing.assert_array_equal(f.raw(t.name), np.asarray(t.data).reshape(-1).view(np.uint8))
    return f, r


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "fixtures", "gguf", "*.gguf"))),
                         ids=os.path.basename)
def test_gguf_fixtures_read_as_gguf_py_reads_them(path):
    f, r = check_against_gguf_py(path)
    assert len(f.metadata) > 0
    for info in f.tensors:
        if info["type"] in ("F32", "F16", "BF16", "Q4_K", "Q6_K", "Q8_0") and info["n_bytes"]:
            got = f.dequantize(info["name"])
            t = next(t for t in r.tensors if t.name == info["name"])
            want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(got.shape)
            assert got.shape == tuple(info["shape"])
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=info["name"])


def test_metadata_matches_gguf_py(files):
    f, _ = check_against_gguf_py(files["q8"])
    assert f.value_type("general.architecture") == "STRING"
    assert f.version == 3
    assert f.metadata["general.architecture"] == "qwen2"


def test_tensors_match_gguf_py(files):
    for path in (files["q8"], files["q4k"]):
        f, r = check_against_gguf_py(path)
        for info, t in zip(f.tensors, r.tensors):
            raw = f.raw(t.name)
            # a view of the mapping, not a copy, and read-only
            assert not raw.flags.owndata
            assert not raw.flags.writeable
            assert raw.base is f
            with pytest.raises(ValueError):
                raw[0] = 1
            want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            got = f.dequantize(t.name)
            assert got.shape == tuple(info["shape"])
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-6, atol=1e-7, err_msg=t.name)
        assert f.tensors[0]["name"] in f
        assert "no.such.tensor" not in f
        with pytest.raises(KeyError):
            f.dequantize("no.such.tensor")


# Every type qforge writes that gguf-py dequantizes, and the recipe that yields it with --pure.
# qforge's dequantized values equal gguf-py's bit for bit for all of them (measured: no element
# differs), so the comparison is exact.
WRITE_TYPES = [
    ("F32", "f32"), ("F16", "f16"), ("BF16", "bf16"), ("Q8_0", "q8_0"), ("Q4_0", "q4_0"), ("Q4_1", "q4_1"),
    ("Q5_0", "q5_0"), ("Q5_1", "q5_1"), ("Q2_K", "q2_k"), ("Q3_K", "q3_k_m"), ("Q4_K", "q4_k_m"),
    ("Q5_K", "q5_k_m"), ("Q6_K", "q6_k"), ("IQ4_NL", "iq4_nl"), ("IQ4_XS", "iq4_xs"),
]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("types")
    rng = np.random.default_rng(11)
    st = tmp / "w.safetensors"
    write_safetensors(st, {
        "a": (rng.standard_normal((16, 512)) * 0.05).astype(np.float32),
        "b": (rng.standard_normal((4, 256)) * 2.0).astype(np.float16),
        "c": rng.standard_normal((3, 2, 256)).astype(np.float32),
        "n": rng.standard_normal(512).astype(np.float32),
    })
    return st


@pytest.mark.parametrize("ty,recipe", WRITE_TYPES, ids=[t for t, _ in WRITE_TYPES])
def test_dequantize_matches_gguf_py_for_every_written_type(tmp_path, weights_file, ty, recipe):
    out = tmp_path / f"{ty}.gguf"
    qforge.convert(weights_file, out, recipe, pure=True, progress=False)
    f, r = check_against_gguf_py(str(out))
    types = {t["name"]: t["type"] for t in f.tensors}
    assert types["a"] == types["b"] == types["c"] == ty, types
    assert types["n"] == "F32"  # 1-D stays F32
    for t in r.tensors:
        got = f.dequantize(t.name)
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(got.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"{ty} {t.name}")
        assert np.all(np.isfinite(got))
    # and they are the source's, up to the type's error
    a = f.dequantize("a")
    assert a.shape == (16, 512)
    assert 0.04 < np.std(a) < 0.06


def test_verify_and_inspect(files):
    q4k, tmp = files["q4k"], files["tmp"]
    with qforge.GGUFFile(q4k) as f:
        v = f.verify()
        assert (v["has_hashes"], v["hashed"], v["mismatched"]) == (True, len(f), [])
        fourth = f.inspect()["tensors"][3]
        name = f.tensors[3]["name"]
    doc = qforge.inspect(q4k)
    assert doc["tensors"][3] == fourth
    assert name in [t["name"] for t in doc["tensors"]]
    r = cli("inspect", q4k, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == doc
    # flip a byte of one tensor in a copy: verify names it
    bad = os.path.join(tmp, "flipped.gguf")
    shutil.copy(q4k, bad)
    with qforge.GGUFFile(bad) as f:
        t = f.tensors[2]
    r = gguf.GGUFReader(bad)
    at = r.tensors[2].data_offset
    del r
    with open(bad, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0x10]))
    with qforge.GGUFFile(bad) as f:
        assert f.verify()["mismatched"] == [t["name"]]


def test_kernels_match_gguf_py():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(256 * 16) * 0.05).astype(np.float32)
    for name, ty in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q5_1", T.Q5_1)):
        ours = qforge.quantize(x, name)
        theirs = gguf.quants.quantize(x.reshape(16, 256), ty).reshape(-1)
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    # RMS error bounds: about twice what each type measures on these N(0, 0.05) values
    for name, ty, bound in (("q8_0", T.Q8_0, 6e-4), ("q4_k", T.Q4_K, 8e-3), ("q6_k", T.Q6_K, 2e-3),
                            ("iq4_xs", T.IQ4_XS, 8e-3), ("q2_k", T.Q2_K, 0.03)):
        blocks = qforge.quantize(x, name)
        assert blocks.nbytes == len(x) // qforge.type_size(name)[0] * qforge.type_size(name)[1]
        got = qforge.dequantize(blocks, name)
        want = gguf.quants.dequantize(blocks.reshape(16, -1), ty).reshape(-1)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
        assert np.sqrt(np.mean((got - x) ** 2)) < bound, name


def test_type_stub_covers_the_api():
    import ast
    import inspect as pyinspect

    stub = os.path.join(os.path.dirname(qforge.__file__), "__init__.pyi")
    tree = ast.parse(read(stub).decode())
    defined = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert set(qforge.__all__) <= set(defined), set(qforge.__all__) - set(defined)
    # convert's keywords in the stub are the extension's
    stub_args = defined["convert"].args
    names = [a.arg for a in stub_args.args] + [a.arg for a in stub_args.kwonlyargs]
    assert names == list(pyinspect.signature(qforge.convert).parameters)
    for name in qforge.__all__:
        if isinstance(getattr(qforge, name), type) and issubclass(getattr(qforge, name), BaseException):
            assert ast.get_docstring(defined[name]), name


# ---------------------------------------------------------------------------------------------
# split output and split input


def shard_files(folder, stem):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(stem + "-"))


@pytest.mark.parametrize("limit", [dict(split_max_tensors=7), dict(split_max_size="150K"),
                                   dict(split_max_size=150_000)])
def test_convert_into_a_split_set_is_the_clis_and_merges_back(tmp_path, limit):
    (k, v), = limit.items()
    flag = "--" + k.replace("_", "-")
    r = cli("convert", FIXTURE, "-t", "q4_k_m", flag, v, "--quiet", "--json", "-o", tmp_path / "cli.gguf")
    assert r.returncode == 0, r.stderr
    summary = qforge.convert(FIXTURE, tmp_path / "api.gguf", "q4_k_m", progress=False, **limit)
    by_cli, by_api = shard_files(tmp_path, "cli"), shard_files(tmp_path, "api")
    assert len(by_api) == len(by_cli) >= 2
    assert [read(p) for p in by_api] == [read(p) for p in by_cli]
    assert summary["output"] == by_api[0] and summary["shards"] == by_api
    assert set(summary) == SUMMARY_KEYS | {"shards"}
    # gguf-py reads the first shard's split keys as gguf-split writes them
    first = gguf.GGUFReader(by_api[0])
    assert int(first.fields["split.count"].parts[-1][0]) == len(by_api)
    # merged back through the API: the one-file conversion byte for byte
    whole = tmp_path / "whole.gguf"
    qforge.convert(FIXTURE, whole, "q4_k_m", progress=False)
    merged = qforge.convert(by_api[0], tmp_path / "merged.gguf", progress=False)
    assert "shards" not in merged
    assert read(tmp_path / "merged.gguf") == read(whole)


def test_split_arguments_are_checked(tmp_path):
    for kwargs, exc, text in [
        (dict(split_max_tensors=0), ValueError, "at least 1"),
        (dict(split_max_size="12X"), ValueError, "units are K, M or G"),
        (dict(split_max_size=1, split_max_tensors=2), ValueError, "not both"),
        (dict(split_max_size=[1]), TypeError, "number of bytes"),
    ]:
        with pytest.raises(exc, match=text):
            qforge.convert(FIXTURE, tmp_path / "x.gguf", "q8_0", progress=False, **kwargs)
    assert entries(tmp_path) == []


def test_gguffile_opens_a_split_set_from_its_first_shard(tmp_path, files):
    r = cli("split", files["q4k"], "-o", tmp_path / "s", "--max-tensors", "10")
    assert r.returncode == 0, r.stderr
    shards = shard_files(tmp_path, "s")
    assert len(shards) >= 3
    whole = qforge.GGUFFile(files["q4k"])
    with qforge.GGUFFile(shards[0]) as s:
        assert [str(p) for p in s.shards] == shards
        assert len(s) == len(whole)
        assert [t["name"] for t in s.tensors] == [t["name"] for t in whole.tensors]
        for t in whole.tensors:
            assert np.array_equal(s.raw(t["name"]), whole.raw(t["name"])), t["name"]
        last = whole.tensors[-1]["name"]
        assert np.array_equal(s.dequantize(last), whole.dequantize(last))
        assert s.verify()["mismatched"] == [] and s.verify()["hashed"] == len(whole)
        assert "split.count" not in s.metadata
    assert qforge.GGUFFile(files["q4k"]).shards == []
    # a later shard opens alone, with its split keys
    later = qforge.GGUFFile(shards[1])
    assert later.shards == [] and later.metadata["split.no"] == 1
    os.remove(shards[-1])
    with pytest.raises(qforge.QforgeError, match=os.path.basename(shards[-1]) + ".*missing"):
        qforge.GGUFFile(shards[0])


def test_merging_a_damaged_set_raises_naming_the_shard(tmp_path, files):
    r = cli("split", files["q8"], "-o", tmp_path / "d", "--max-tensors", "10")
    assert r.returncode == 0, r.stderr
    shards = shard_files(tmp_path, "d")
    data = bytearray(read(shards[1]))
    data[-100] ^= 0x40
    with open(shards[1], "wb") as f:
        f.write(data)
    with pytest.raises(qforge.ConversionError, match=os.path.basename(shards[1]) + ".*SHA-256"):
        qforge.convert(shards[0], tmp_path / "merged.gguf", progress=False)
    assert not os.path.exists(tmp_path / "merged.gguf")

"""The installed `qforge` wheel (pip install ./python): the console command converts the
bundled fixture, `GGUFFile` reads metadata and tensors exactly as gguf-py does, and
`quantize`/`dequantize` agree with gguf-py's numpy reference on the same blocks.

    python3 tests/python/test_api.py   (after pip install ./python; needs gguf from PyPI)
"""
import os
import json
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

import qforge

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "fixtures", "tiny-qwen2")


class Wheel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.q8 = os.path.join(cls.tmp, "q8.gguf")
        cls.q4k = os.path.join(cls.tmp, "q4k.gguf")
        exe = shutil.which("qforge")
        assert exe is not None, "the wheel installs a qforge command"
        r = subprocess.run([exe, "convert", FIXTURE, "-t", "q8_0", "--quiet", "-o", cls.q8],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        qforge.convert(FIXTURE, cls.q4k, "q4_k_m")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_metadata_matches_gguf_py(self):
        f = qforge.GGUFFile(self.q8)
        ours = f.metadata
        r = gguf.GGUFReader(self.q8)
        theirs = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
        self.assertEqual(list(ours), list(theirs))
        for k, v in theirs.items():
            if isinstance(v, float):
                self.assertEqual(np.float32(ours[k]), np.float32(v), k)
            elif isinstance(v, list) and v and isinstance(v[0], float):
                np.testing.assert_array_equal(np.float32(ours[k]), np.float32(v), k)
            else:
                self.assertEqual(ours[k], v, k)
        self.assertEqual(f.value_type("general.architecture"), "STRING")
        self.assertEqual(f.version, 3)

    def test_tensors_match_gguf_py(self):
        for path in (self.q8, self.q4k):
            f = qforge.GGUFFile(path)
            r = gguf.GGUFReader(path)
            self.assertEqual([t["name"] for t in f.tensors], [t.name for t in r.tensors])
            self.assertEqual(len(f), len(r.tensors))
            for info, t in zip(f.tensors, r.tensors):
                self.assertEqual(info["type"], t.tensor_type.name)
                self.assertEqual(tuple(info["shape"]), tuple(int(d) for d in reversed(t.shape)))
                raw = f.raw(t.name)
                np.testing.assert_array_equal(raw, np.asarray(t.data).reshape(-1).view(np.uint8))
                # a view of the mapping, not a copy, and read-only
                self.assertFalse(raw.flags.owndata)
                self.assertFalse(raw.flags.writeable)
                self.assertIs(raw.base, f)
                with self.assertRaises(ValueError):
                    raw[0] = 1
                want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
                got = f.dequantize(t.name)
                self.assertEqual(got.shape, tuple(info["shape"]))
                self.assertEqual(got.dtype, np.float32)
                # ggml's dequantizers round the same way as qforge's, gguf-py's numpy may
                # differ by an f32 ulp in scale products
                np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-6, atol=1e-7, err_msg=t.name)
            self.assertIn(f.tensors[0]["name"], f)
            self.assertNotIn("no.such.tensor", f)
            with self.assertRaises(KeyError):
                f.dequantize("no.such.tensor")

    def test_verify_and_inspect(self):
        with qforge.GGUFFile(self.q4k) as f:
            v = f.verify()
            self.assertEqual((v["has_hashes"], v["hashed"], v["mismatched"]), (True, len(f), []))
            fourth = f.inspect()["tensors"][3]
            name = f.tensors[3]["name"]
        doc = qforge.inspect(self.q4k)
        self.assertEqual(doc["tensors"][3], fourth)
        self.assertIn(name, [t["name"] for t in doc["tensors"]])
        cli = subprocess.run([shutil.which("qforge"), "inspect", self.q4k, "--json"], capture_output=True, text=True)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertEqual(json.loads(cli.stdout), doc)
        # flip a byte of one tensor in a copy: verify names it
        bad = os.path.join(self.tmp, "flipped.gguf")
        shutil.copy(self.q4k, bad)
        with qforge.GGUFFile(bad) as f:
            t = f.tensors[2]
        r = gguf.GGUFReader(bad)
        at = r.tensors[2].data_offset
        with open(bad, "r+b") as fh:
            fh.seek(at)
            b = fh.read(1)
            fh.seek(at)
            fh.write(bytes([b[0] ^ 0x10]))
        del r
        with qforge.GGUFFile(bad) as f:
            self.assertEqual(f.verify()["mismatched"], [t["name"]])

    def test_kernels_match_gguf_py(self):
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
            self.assertEqual(blocks.nbytes, len(x) // qforge.type_size(name)[0] * qforge.type_size(name)[1])
            got = qforge.dequantize(blocks, name)
            want = gguf.quants.dequantize(blocks.reshape(16, -1), ty).reshape(-1)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
            self.assertLess(np.sqrt(np.mean((got - x) ** 2)), bound, name)

    def test_errors_name_the_cause(self):
        with self.assertRaises(qforge.QforgeError) as e:
            qforge.GGUFFile(os.path.join(self.tmp, "missing.gguf"))
        self.assertIn("missing.gguf", str(e.exception))
        bad = os.path.join(self.tmp, "bad.gguf")
        with open(self.q8, "rb") as src, open(bad, "wb") as dst:
            dst.write(src.read()[:100])
        with self.assertRaises(qforge.QforgeError) as e:
            qforge.GGUFFile(bad)
        self.assertIn("bad.gguf", str(e.exception))
        with self.assertRaises(qforge.QforgeError) as e:
            qforge.quantize(np.zeros(100, np.float32), "q4_k")
        self.assertIn("256", str(e.exception))
        with self.assertRaises(qforge.QforgeError) as e:
            qforge.quantize(np.zeros(256, np.float32), "q9_9")
        self.assertIn("q9_9", str(e.exception))
        with self.assertRaises(qforge.QforgeError):
            qforge.convert(os.path.join(self.tmp, "nowhere"), os.path.join(self.tmp, "x.gguf"))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "x.gguf")))


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""`qforge edit` and `qforge diff` against gguf-py and llama.cpp: gguf-py reads the edited file
with exactly the requested changes (every other key and every tensor unchanged), llama.cpp
loads it and gives the same logits, and `qforge diff` of a requantization lists exactly the
retyped tensors. The split checks: shards from `qforge split` and from `convert
--split-max-*` load in llama.cpp with the whole file's logits, and merge back byte for byte."""
import json
import os

import numpy as np


def edit_checks(h, args, fix, tmp):
    qforge, only = args.qforge, args.only
    work = os.path.join(tmp, "edit")

    def same_logits(a, b):
        """llama.cpp's logits for the same tokens from files a and b are identical."""
        tokens = list(range(1, 40))
        la = h.llama_logits(a, tokens)
        h.release(a)
        lb = h.llama_logits(b, tokens)
        h.release(b)
        if not np.array_equal(la, lb):
            raise AssertionError(f"logits differ by {np.abs(la - lb).max()}")
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "f16.gguf")
    out = os.path.join(work, "edited.gguf")
    tpl = os.path.join(work, "template.jinja")

    def edited():
        h.convert(qforge, os.path.join(fix, "tiny-qwen3"), "f16", src)
        with open(tpl, "w", encoding="utf-8") as f:
            f.write("{% for m in messages %}{{ m['content'] }}{% endfor %}")
        r = h.run_qforge(qforge, "edit", src, "-o", out, "--set", "general.name=str:edited",
                         "--set", "qwen3.context_length=u32:1024", "--delete", "tokenizer.ggml.padding_token_id",
                         "--chat-template-file", tpl)
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        (kva, ta), (kvb, tb) = h.read_gguf(src), h.read_gguf(out)
        want = dict(kva)
        want["general.name"] = (["STRING"], "edited")
        want["qwen3.context_length"] = (["UINT32"], 1024)
        want.pop("tokenizer.ggml.padding_token_id")
        want["tokenizer.chat_template"] = (["STRING"], open(tpl, encoding="utf-8").read())
        diffs = h.describe_kv_diff(kvb, want)
        if diffs or ta != tb:
            raise AssertionError(f"gguf-py reading differs: {diffs[:4]}; tensors equal {ta == tb}")
        same_logits(src, out)
        v = h.run_qforge(qforge, "verify", out)
        if v.returncode != 0:
            raise AssertionError(v.stdout + v.stderr)
        return f"{len(kvb)} keys as requested, {len(tb)} tensors unchanged, hashes verify, llama.cpp logits identical"

    if not h.check("edit: gguf-py reads exactly the edits, llama.cpp loads the file", edited, only,
                   prerequisite=True):
        return

    def diffed():
        q = os.path.join(work, "q4_k_m.gguf")
        h.convert(qforge, src, "q4_k_m", q)
        import json
        r = h.run_qforge(qforge, "diff", src, q, "--json", "--values")
        if r.returncode != 1:
            raise AssertionError(f"exit {r.returncode}: {r.stderr}")
        doc = json.loads(r.stdout)
        _, ta = h.read_gguf(src)
        _, tb = h.read_gguf(q)
        retyped = sorted(x[0] for x, y in zip(ta, tb) if x[1] != y[1])
        got = sorted(t["name"] for t in doc["tensors"] if t["change"] == "retyped")
        if got != retyped or len(doc["tensors"]) != len(retyped):
            raise AssertionError(f"diff lists {got}, the files differ in {retyped}")
        snr = [t["snr_db"] for t in doc["tensors"]]
        same = h.run_qforge(qforge, "diff", q, q)
        if same.returncode != 0:
            raise AssertionError("a file against itself differs")
        return f"{len(got)} retyped tensors listed (SNR {min(snr):.1f}-{max(snr):.1f} dB); a file against itself: none"

    h.check("diff: a requantization shows exactly its retyped tensors", diffed, only)

    def q4k():
        """The fixture's q4_k_m file (converted once)."""
        q = os.path.join(work, "q4_k_m.gguf")
        if not os.path.exists(q):
            h.convert(qforge, src, "q4_k_m", q)
        return q

    def split_q4k(folder):
        """`qforge split` of the q4_k_m file into 8-tensor shards under work/FOLDER/m."""
        q = q4k()
        prefix = os.path.join(work, folder, "m")
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        r = h.run_qforge(qforge, "split", q, "-o", prefix, "--max-tensors", "8")
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        return q, prefix, r.stdout.split()

    def split():
        import glob
        import shutil
        q, prefix, shards = split_q4k("split")
        if len(shards) < 3 or sorted(glob.glob(prefix + "-*.gguf")) != shards:
            raise AssertionError(f"shards: {shards}")
        # gguf-py reads every shard: the tensors in order and byte for byte, the metadata in the
        # first with gguf-split's key types
        kv_whole, t_whole = h.read_gguf(q)
        joined = []
        for i, p in enumerate(shards):
            kv, ts = h.read_gguf(p)
            joined += ts
            want = {"split.no": (["UINT16"], i), "split.count": (["UINT16"], len(shards)),
                    "split.tensors.count": (["INT32"], len(t_whole))}
            got = {k: kv.get(k) for k in want}
            if got != want:
                raise AssertionError(f"{p}: {got}")
            if i == 0 and any(kv.get(k) != v for k, v in kv_whole.items() if k != "qforge.tensor_sha256"):
                raise AssertionError("the first shard's metadata differs from the input's")
        if joined != t_whole:
            raise AssertionError("gguf-py reads different tensors from the shards")
        same_logits(q, shards[0])
        # negative control: llama.cpp really reads the other shards
        hidden = shards[-1] + ".away"
        shutil.move(shards[-1], hidden)
        try:
            h.llama_logits(shards[0], list(range(1, 40)))
            loaded = True
        except Exception:
            loaded = False
        finally:
            h.release(shards[0])
            shutil.move(hidden, shards[-1])
        if loaded:
            raise AssertionError("llama.cpp loaded the model with its last shard missing")
        for p in shards:
            v = h.run_qforge(qforge, "verify", p)
            if v.returncode != 0:
                raise AssertionError(p + ": " + v.stdout + v.stderr)
        return f"{len(shards)} shards: gguf-py reads them (tensors and metadata), llama.cpp loads the first with logits identical to the whole file and refuses without the last; each verifies"

    h.check("split: llama.cpp loads the shards as one model", split, only)

    def merged():
        q, _, shards = split_q4k("merge")
        out = os.path.join(work, "merge", "merged.gguf")
        r = h.run_qforge(qforge, "convert", shards[0], "-o", out)
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        # gguf-py reads the same keys and tensors as in the unsplit file
        (kva, ta), (kvb, tb) = h.read_gguf(q), h.read_gguf(out)
        diffs = h.describe_kv_diff(kvb, kva)
        if diffs or ta != tb:
            raise AssertionError(f"gguf-py reading differs: {diffs[:4]}; tensors equal {ta == tb}")
        same_logits(q, out)
        # negative control: a merge of a set with a missing shard is refused, nothing written
        os.remove(out)
        os.remove(shards[1])
        r = h.run_qforge(qforge, "convert", shards[0], "-o", out)
        if r.returncode == 0 or os.path.exists(out) or shards[1] not in r.stderr:
            raise AssertionError(f"a set without {shards[1]} was merged: {r.returncode} {r.stderr}")
        return (f"{len(shards)} shards merged: gguf-py reads the unsplit file's {len(kvb)} keys and {len(tb)} "
                f"tensors, llama.cpp logits identical; a missing shard is refused")

    h.check("split: convert merges the shards back into the model", merged, only)

    def converted_split():
        import glob
        q = q4k()
        _, t_whole = h.read_gguf(q)
        per = -(-len(t_whole) // 3)  # three shards
        out = os.path.join(work, "csplit", "m.gguf")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        r = h.run_qforge(qforge, "convert", src, "-t", "q4_k_m", "--split-max-tensors", str(per),
                         "--json", "-q", "-o", out)
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        shards = json.loads(r.stdout)["shards"]
        if len(shards) != 3 or sorted(glob.glob(os.path.join(work, "csplit", "m-*.gguf"))) != shards:
            raise AssertionError(f"shards: {shards}")
        joined = []
        for p in shards:
            joined += h.read_gguf(p)[1]
        if joined != t_whole:
            raise AssertionError("gguf-py reads other tensors from the shards than from the one file")
        same_logits(q, shards[0])
        return ("convert --split-max-tensors wrote 3 shards: gguf-py reads the one-file conversion's "
                "tensors from them, llama.cpp loads the first with identical logits")

    h.check("split: convert writes a split set llama.cpp loads", converted_split, only)

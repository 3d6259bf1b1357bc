#!/usr/bin/env python3
"""Whole-command convert benchmark (not a test): wall time, process CPU time, CPU/wall and peak
RSS of `qforge convert` to each --types entry at each --threads count, next to `cat` of the
source shards into the output folder and llama.cpp quantizing the same model's f16 GGUF through
its library API (llama-cpp-python's `llama_model_quantize`) on the same thread count, all in
one run. Prints Markdown tables with ratios to `cat`, then each stage's throughput measured in
isolation (examples/stage_throughput.rs).

    python3 bench/convert_bench.py --gb 1.5 [--threads 1 2] [--types f16 q8_0 q4_0 q4_k_m]
        [--repeats 5] [--out /dev/shm/qforge-bench] [--cold] [--baseline OLD_QFORGE]

The synthetic checkpoint is made by scripts/make_synthetic_checkpoint.py (cached in --work).
This machine's page cache and fresh memory are noisy, so before every timed run the input is
re-read and ~2 GB are written and deleted in the output folder; the commands compared are
interleaved, and the best of --repeats runs is reported. --cold also times one pass of `cat`
and of each qforge run right after dropping the page cache (needs root). --baseline checks
that every output is byte-identical to another qforge binary's.
"""
import argparse
import filecmp
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QFORGE = os.path.join(ROOT, "target", "release", "qforge")

LLAMA_QUANTIZE = r"""
import sys, llama_cpp
src, dst, ftype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = ftype
p.nthread = threads
rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
sys.exit(rc)
"""
FTYPES = {"q8_0": 7, "q4_0": 2, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14,
          "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30}


def timed(cmd, shell=False):
    """(wall s, CPU s = user + system, peak RSS MiB) of one run."""
    with tempfile.NamedTemporaryFile("r") as t:
        argv = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", t.name]
        argv += ["sh", "-c", cmd] if shell else cmd
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, user, sys_, rss_kb = t.read().split()
    return float(wall), float(user) + float(sys_), int(rss_kb) / 1024.0


def warm(path):
    paths = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "*")))
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


def settle(inp, out_dir, mb=2048):
    """Re-read the input and write-then-delete ~2 GB in the output folder, so neither the page
    cache nor fresh-memory backing favours whichever command runs next."""
    warm(inp)
    junk = os.path.join(out_dir, "settle.tmp")
    block = os.urandom(1 << 20)
    with open(junk, "wb") as f:
        for _ in range(mb):
            f.write(block)
    os.remove(junk)
    warm(inp)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", default="/tmp/qforge-bench")
    ap.add_argument("--out", default="/dev/shm/qforge-bench", help="output folder (tmpfs by default)")
    ap.add_argument("--types", nargs="+", default=["f16", "q8_0", "q4_0", "q4_k_m"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also one cold-cache pass (needs root)")
    ap.add_argument("--no-llama", action="store_true", help="skip llama.cpp's quantizer")
    ap.add_argument("--baseline", help="another qforge binary, timed beside this one (at the most "
                    "threads); its outputs must be identical")
    ap.add_argument("--no-stages", action="store_true")
    ap.add_argument("--no-one-core", action="store_true", help="skip the one-core (taskset) runs")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, f"synth-{args.gb}")
    if not os.path.isdir(model):
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_synthetic_checkpoint.py"),
                        model, "--gb", str(args.gb)], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "stage_throughput"],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    out = args.out
    os.makedirs(out, exist_ok=True)
    shards = sorted(glob.glob(os.path.join(model, "*.safetensors")))
    src_bytes = sum(os.path.getsize(p) for p in shards)
    cat_cmd = "cat " + " ".join(shards) + f" > {out}/cat.bin"

    # every command is a (label, argv or shell string, input to warm, output path)
    cmds = [("cat of the source shards", cat_cmd, model, f"{out}/cat.bin")]
    f16 = os.path.join(out, "ref-f16.gguf")
    if not args.no_llama and any(ty in FTYPES for ty in args.types):
        subprocess.run([QFORGE, "convert", model, "-t", "f16", "-q", "-o", f16], check=True)
    one_core = shutil.which("taskset") is not None and not args.no_one_core
    for ty in args.types:
        if one_core:
            dst = os.path.join(out, f"qforge-{ty}-core.gguf")
            cmds.append((f"qforge -t {ty} on one core (taskset -c 0, --threads 1)",
                         ["taskset", "-c", "0", QFORGE, "convert", model, "-t", ty, "--threads", "1", "-q",
                          "-o", dst], model, dst))
        for th in args.threads:
            dst = os.path.join(out, f"qforge-{ty}-t{th}.gguf")
            cmds.append((f"qforge -t {ty} --threads {th}",
                         [QFORGE, "convert", model, "-t", ty, "--threads", str(th), "-q", "-o", dst],
                         model, dst))
            if args.baseline and th == max(args.threads):
                ref = os.path.join(out, f"baseline-{ty}.gguf")
                cmds.append((f"baseline qforge -t {ty} --threads {th}",
                             [args.baseline, "convert", model, "-t", ty, "--threads", str(th), "-q", "-o", ref],
                             model, ref))
            if ty in FTYPES and not args.no_llama:
                lq = os.path.join(out, f"llama-{ty}-t{th}.gguf")
                cmds.append((f"llama.cpp f16 GGUF -> {ty}, {th} threads",
                             [sys.executable, "-c", LLAMA_QUANTIZE, f16, lq, str(FTYPES[ty]), str(th)],
                             f16, lq))
    runs = {label: [] for label, *_ in cmds}
    for r in range(args.repeats):  # interleaved
        for label, cmd, inp, dst in cmds:
            settle(inp, out)
            runs[label].append(timed(cmd, shell=isinstance(cmd, str)))
            if r + 1 < args.repeats or label.startswith(("llama", "cat")):
                if os.path.exists(dst):
                    os.remove(dst)
    if args.baseline:
        for ty in args.types:
            for th in args.threads:
                mine = os.path.join(out, f"qforge-{ty}-t{th}.gguf")
                ref = os.path.join(out, f"baseline-{ty}.gguf")
                same = filecmp.cmp(mine, ref, shallow=False)
                print(f"{ty} --threads {th}: {'identical to' if same else 'DIFFERS from'} the baseline's output")
                if not same:
                    sys.exit(1)
    cold = {}
    if args.cold:
        for label, cmd, inp, dst in cmds:
            if label.startswith("llama"):
                continue
            drop_caches()
            cold[label] = timed(cmd, shell=isinstance(cmd, str))
            if os.path.exists(dst):
                os.remove(dst)
    for p in glob.glob(os.path.join(out, "*.gguf")) + glob.glob(os.path.join(out, "*.bin")):
        os.remove(p)

    cat_wall = min(runs[cmds[0][0]])[0]
    print(f"\nsource: {src_bytes / 1e9:.2f} GB f16 safetensors ({len(shards)} shards); output to "
          f"{out}; best of {args.repeats}, interleaved; {os.cpu_count()} CPUs\n")
    print("| run | wall s | × cat | CPU s | CPU/wall | peak RSS MiB |" + (" cold wall s |" if cold else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if cold else ""))
    for label, *_ in cmds:
        wall, cpu, rss = min(runs[label])
        row = f"| {label} | {wall:.2f} | {wall / cat_wall:.2f} | {cpu:.2f} | {cpu / wall:.2f} | {rss:.0f} |"
        if cold:
            row += f" {cold[label][0]:.2f} |" if label in cold else " |"
        print(row)
    print()
    for ty in args.types:
        walls = {th: min(runs[f"qforge -t {ty} --threads {th}"])[0] for th in args.threads}
        if len(walls) > 1:
            lo, hi = min(args.threads), max(args.threads)
            print(f"{ty}: --threads {hi} is {walls[lo] / walls[hi]:.2f}x faster than --threads {lo}")
        if one_core:
            core = min(runs[f"qforge -t {ty} on one core (taskset -c 0, --threads 1)"])[0]
            hi = max(args.threads)
            print(f"{ty}: all cores (--threads {hi}) are {core / walls[hi]:.2f}x faster than one core")
        if args.baseline:
            hi = max(args.threads)
            base = min(runs[f"baseline qforge -t {ty} --threads {hi}"])[0]
            print(f"{ty}: {base / walls[hi]:.2f}x faster than the baseline binary")
        if ty in FTYPES and not args.no_llama:
            for th in args.threads:
                ll = min(runs[f"llama.cpp f16 GGUF -> {ty}, {th} threads"])[0]
                print(f"{ty}, {th} threads: qforge from safetensors is {ll / walls[th]:.2f}x faster "
                      f"than llama.cpp quantizing the f16 GGUF")
    if not args.no_stages:
        print("\nstages in isolation, one core each:")
        ex = os.path.join(ROOT, "target", "release", "examples", "stage_throughput")
        qtypes = [t.replace("_m", "").replace("_s", "") for t in args.types if t != "f16"]
        warm(model)
        subprocess.run([ex, model, out] + sorted(set(qtypes)), check=True)


if __name__ == "__main__":
    main()

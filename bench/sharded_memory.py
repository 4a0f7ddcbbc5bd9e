#!/usr/bin/python3
"""Memory of sharded tables: a vocabulary whose replicated tables cannot fit trains over N ranks.

What it does:
  1. writes a generated vocabulary of --vocab words (<S> </S> <UNK>, then w1, w2, ... most
     frequent first) and a training text drawn from a Zipf law over those words (--tokens words);
  2. trains elmo_fast on them over --ranks local ranks (`--nodes 1 --workers_per_node N`) with
     E = P = --dim, Adagrad, a sampled softmax, dist.hot_rows = --hot, for --steps steps;
  3. reads run.dir/summary.json and prints, per rank: the table bytes it holds (values + Adagrad
     accumulators of the embedding and softmax) and its peak resident memory (VmHWM), against
     the bytes one full copy of the tables takes (the replicated layout every rank held before
     the tables were sharded) and N such copies against the machine's memory.
What it is not: a speed benchmark (the steps are few and the ranks share the cores).

Run (from the repository root, after ./setup.sh):
  /usr/bin/python3 bench/sharded_memory.py [--vocab 2500000] [--ranks 4] [--dim 256]
      [--steps 6] [--binary ./build/elmo_fast] [--work DIR] [--json OUT]
"""

import argparse
import bisect
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mib(n):
    return f"{n / 2**20:,.0f} MiB"


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def machine_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def write_data(work, vocab, tokens, exponent, seed):
    """vocab.txt (vocab words + the three special tokens) and train.txt (Zipf text)."""
    words = vocab - 3
    with open(os.path.join(work, "vocab.txt"), "w") as f:
        f.write("<S>\n</S>\n<UNK>\n")
        f.write("".join(f"w{i}\n" for i in range(1, words + 1)))
    cum = list(itertools.accumulate((r ** -exponent for r in range(1, words + 1))))
    total = cum[-1]
    rng = random.Random(seed)
    written = 0
    with open(os.path.join(work, "train.txt"), "w") as f:
        while written < tokens:
            n = rng.randint(8, 24)
            ids = [bisect.bisect_left(cum, rng.random() * total) + 1 for _ in range(n)]
            f.write(" ".join(f"w{i}" for i in ids) + "\n")
            written += n
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=2_500_000, help="words in the vocabulary")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256, help="E = P")
    ap.add_argument("--cell", type=int, default=512)
    ap.add_argument("--hot", type=int, default=16384, help="dist.hot_rows")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64, help="train.batch_size over all ranks")
    ap.add_argument("--samples", type=int, default=8192)
    ap.add_argument("--tokens", type=int, default=2_000_000, help="words of training text")
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "elmo_fast"))
    ap.add_argument("--work", default="", help="folder for the data and the run (default: a "
                    "temporary one, removed afterwards)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"sharded_memory: no binary at {args.binary}: run ./setup.sh first "
                 "(or pass --binary)")

    work = args.work or tempfile.mkdtemp(prefix="elmo-sharded-memory-")
    os.makedirs(work, exist_ok=True)
    try:
        start = time.time()
        written = write_data(work, args.vocab, args.tokens, args.zipf, 7)
        print(f"data: {args.vocab:,} words, {written:,} words of Zipf({args.zipf}) text "
              f"[{time.time() - start:.0f} s]", flush=True)
        run_dir = os.path.join(work, "run")
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = {
            "run.dir": run_dir,
            "data.corpus": os.path.join(work, "train.txt"),
            "data.vocab": os.path.join(work, "vocab.txt"),
            "model.embedding_dim": args.dim,
            "model.projection_dim": args.dim,
            "model.cell_size": args.cell,
            "train.batch_size": args.batch,
            "train.unroll_steps": 20,
            "train.max_steps": args.steps,
            "train.threads": 1,
            "train.log_every": 1,
            "softmax.type": "sampled",
            "softmax.samples": args.samples,
            "optimizer.type": "adagrad",
            "checkpoint.every_steps": 0,
            "dist.hot_rows": args.hot,
            "dist.timeout_seconds": 600,
        }
        cmd = [args.binary, "--config", os.path.join(REPO, "run.toml"), "--nodes", "1",
               "--workers_per_node", str(args.ranks)]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
        print("run:", " ".join(cmd), flush=True)
        start = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.time() - start
        if proc.returncode != 0:
            print(proc.stdout[-6000:])
            sys.exit(f"sharded_memory: elmo_fast exited with {proc.returncode}")
        for line in proc.stdout.splitlines():
            if "rows stored" in line or "table bytes" in line or "peak host memory" in line:
                print(" ", line)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    whole = summary["table_bytes"]["every_row"]
    per_rank = summary["table_bytes_per_rank"]
    peaks = summary["peak_host_memory_bytes_per_rank"]
    memory = machine_memory()
    print(f"\none full copy of the tables (values + Adagrad state, V = {args.vocab:,}, "
          f"E = P = {args.dim}): {gib(whole)}; {args.ranks} replicated copies: "
          f"{gib(args.ranks * whole)} (this machine: {gib(memory)})")
    print(f"{'rank':>4} {'table bytes':>14} {'of a full copy':>15} {'peak RSS':>12}")
    for r, (tb, peak) in enumerate(zip(per_rank, peaks)):
        print(f"{r:>4} {mib(tb['host']):>14} {100.0 * tb['host'] / whole:>14.1f}% "
              f"{mib(peak):>12}")
    print(f"sum of peak RSS over ranks: {gib(sum(peaks))}; {summary['steps']} steps in "
          f"{seconds:.0f} s (data, start-up and the final checkpoint included)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vocab": args.vocab, "ranks": args.ranks, "dim": args.dim,
                       "hot_rows": args.hot, "full_copy_bytes": whole,
                       "table_bytes_per_rank": per_rank,
                       "peak_host_memory_bytes_per_rank": peaks,
                       "machine_memory_bytes": memory, "seconds": seconds}, f, indent=1)


if __name__ == "__main__":
    main()

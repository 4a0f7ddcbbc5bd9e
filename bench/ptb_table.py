#!/usr/bin/python3
"""The Penn Treebank table: trains and evaluates configs/ptb-{small,medium,large}.toml with
elmo_fast and prints train / valid / test perplexity and wall time beside the published figures
(the TensorFlow PTB tutorial's and texar's, as in shared/REFERENCE.md).

What one invocation does, per config:
  1. trains `elmo_fast --config configs/ptb-<name>.toml` as shipped, with only the data paths,
     run.dir, run.seed (and train.threads / --set when given) overridden; the final evaluation
     of the run gives valid and test perplexity (eval.* of the config: one row, state carried
     through the file, as the tutorial's test);
  2. reads <run.dir>/summary.json and <run.dir>/metrics.jsonl: train perplexity = exp(mean training
     loss over the log intervals that end in the last epoch, weighted by their steps), as the
     tutorial reports the last epoch's running training perplexity;
  3. prints one table row per config and writes <out>/ptb_table-seed<seed>.json.
A run folder that already holds summary.json is reported, not retrained; one that holds
checkpoints but no summary (an interrupted run) is continued with --resume.

Run (from the repository root, after ./setup.sh):
  /usr/bin/python3 bench/ptb_table.py [small|medium|large|all|CONFIG.toml ...] [--data DIR]
      [--seed N] [--threads N] [--out DIR] [--set section.key=value ...] [--binary PATH]
Default: small, --data ../shared/data/ptb when it exists else data/ptb, --seed 1234 (the
configs' own), --out runs/ptb-table.
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import fail, fmt, run_logged  # noqa: E402

PROGRAM = "ptb_table"

# Published results. TF tutorial: the docstring table of its ptb_word_lm.py (train / valid / test
# perplexity); texar: its language_model_ptb example (test perplexity, seconds per epoch on one
# K80). Test figures and texar's s/epoch as in shared/REFERENCE.md.
PUBLISHED = {
    "small": {"epochs": 13, "tf": (37.99, 121.39, 115.91), "texar_test": 114.72,
              "texar_s_per_epoch": 137},
    "medium": {"epochs": 39, "tf": (48.45, 86.16, 82.07), "texar_test": 84.42,
               "texar_s_per_epoch": 311},
    "large": {"epochs": 55, "tf": (37.87, 82.62, 78.29), "texar_test": 78.72,
              "texar_s_per_epoch": 931},
}
SIZES = ("small", "medium", "large")


def parse_args():
    p = argparse.ArgumentParser(
        description="Train and evaluate the PTB configs; print the table beside the published "
                    "figures.")
    p.add_argument("configs", nargs="*", default=["small"],
                   help="small, medium, large, all, or a config file (default: small)")
    default_data = "../shared/data/ptb" if os.path.isdir("../shared/data/ptb") else "data/ptb"
    p.add_argument("--data", default=default_data,
                   help="folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt "
                        f"(default: {default_data})")
    p.add_argument("--seed", type=int, default=1234, help="run.seed (default 1234)")
    p.add_argument("--threads", type=int, default=None,
                   help="train.threads (default: the config's, 0 = all cores)")
    p.add_argument("--out", default="runs/ptb-table",
                   help="run folders go to OUT/<config>-seed<seed> (default runs/ptb-table)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="section.key=value", help="extra elmo_fast override (repeatable)")
    p.add_argument("--binary", default="./build/elmo_fast")
    return p.parse_args()


def config_paths(names):
    out = []
    for name in names:
        if name == "all":
            out += [f"configs/ptb-{s}.toml" for s in SIZES]
        elif name in SIZES:
            out.append(f"configs/ptb-{name}.toml")
        else:
            out.append(name)
    for path in out:
        if not os.path.isfile(path):
            fail(PROGRAM, f"no config file '{path}' (names: small, medium, large, all; run from "
                          "the repository root)", 2)
    return out


def size_of(config_path):
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return stem[len("ptb-"):] if stem.startswith("ptb-") else stem


def last_epoch_train_ppl(metrics_path):
    """exp(mean loss) over the log intervals ending in the last epoch, weighted by steps."""
    records = []
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            j = json.loads(line)
            if "loss" in j and "epoch" in j:
                records.append(j)
    if not records:
        return None
    final_epoch = records[-1]["epoch"]
    start = max(0.0, math.ceil(final_epoch) - 1.0)
    total = weight = 0.0
    previous_step = 0
    for j in records:
        steps = j["step"] - previous_step
        previous_step = j["step"]
        if j["epoch"] > start + 1e-9 or j is records[-1]:
            total += j["loss"] * steps
            weight += steps
    return math.exp(total / weight) if weight else None


def train_one(args, config_path):
    size = size_of(config_path)
    run_dir = os.path.join(args.out, f"{size}-seed{args.seed}")
    summary_path = os.path.join(run_dir, "summary.json")
    wall_path = os.path.join(run_dir, "ptb_table_wall.json")
    if os.path.isfile(summary_path):
        print(f"{PROGRAM}: {run_dir} already finished: reporting it (delete the folder to "
              "retrain)", flush=True)
    else:
        resume = os.path.isdir(os.path.join(run_dir, "checkpoints"))
        command = [args.binary, "--config", config_path,
                   "--set", f"run.dir={run_dir}",
                   "--set", f"run.seed={args.seed}",
                   "--set", f"data.corpus={args.data}/ptb.train.txt",
                   "--set", f"data.valid={args.data}/ptb.valid.txt",
                   "--set", f"data.test={args.data}/ptb.test.txt"]
        if args.threads is not None:
            command += ["--set", f"train.threads={args.threads}"]
        for o in args.overrides:
            command += ["--set", o]
        if resume:
            command.append("--resume")
        os.makedirs(args.out, exist_ok=True)
        log_path = run_dir + (".resume.log" if resume else ".log")
        start = time.monotonic()
        run_logged(PROGRAM, command, log_path, None, f"{size} seed {args.seed}")
        seconds = time.monotonic() - start
        earlier = 0.0
        if resume and os.path.isfile(wall_path):
            with open(wall_path, encoding="utf-8") as f:
                earlier = json.load(f)["wall_seconds"]
        with open(wall_path, "w", encoding="utf-8") as f:
            json.dump({"wall_seconds": earlier + seconds, "resumed": resume}, f)
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    wall = None
    if os.path.isfile(wall_path):
        with open(wall_path, encoding="utf-8") as f:
            wall = json.load(f)["wall_seconds"]
    steps = summary.get("steps", 0)
    epochs = None
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            j = json.loads(line)
            if "epoch" in j:
                epochs = j["epoch"]
    return {
        "config": config_path, "size": size, "seed": args.seed, "run_dir": run_dir,
        "steps": steps, "epochs": epochs,
        "train_ppl": last_epoch_train_ppl(os.path.join(run_dir, "metrics.jsonl")),
        "valid_ppl": summary.get("valid", {}).get("ppl"),
        "test_ppl": summary.get("test", {}).get("ppl"),
        "test_tokens": summary.get("test", {}).get("tokens"),
        "train_seconds": summary.get("train_seconds"),
        "wall_seconds": wall, "tokens_per_s": summary.get("tokens_per_s"),
        "threads": summary.get("threads"),
    }


def duration(seconds):
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def print_table(args, rows):
    print()
    print(f"PTB table: data {args.data}, seed {args.seed}"
          + (f", train.threads {args.threads}" if args.threads is not None else "")
          + ("".join(f", --set {o}" for o in args.overrides)))
    columns = [("config", 8, "s"), ("epochs", 7, ".2f"), ("train", 9, ".2f"),
               ("valid", 9, ".2f"), ("test", 9, ".2f"),
               ("TF tutorial train/valid/test", 28, "s"), ("texar test", 10, ".2f"),
               ("wall", 8, "s"), ("s/epoch", 8, ".0f"), ("texar s/ep", 10, "d"),
               ("tokens/s", 8, ".0f")]
    header = " ".join(f"{name:>{width}}" if spec != "s" or name in ("wall",) else
                      f"{name:<{width}}" for name, width, spec in columns)
    print(header)
    print("-" * len(header))
    for r in rows:
        pub = PUBLISHED.get(r["size"])
        per_epoch = (r["train_seconds"] / r["epochs"]
                     if r["train_seconds"] and r["epochs"] else None)
        values = [r["size"], r["epochs"], r["train_ppl"], r["valid_ppl"], r["test_ppl"],
                  "/".join(f"{x:.2f}" for x in pub["tf"]) if pub else "-",
                  pub["texar_test"] if pub else None, duration(r["wall_seconds"]), per_epoch,
                  pub["texar_s_per_epoch"] if pub else None, r["tokens_per_s"]]
        cells = []
        for (name, width, spec), value in zip(columns, values):
            if spec == "s":
                cells.append(f"{value:>{width}}" if name == "wall" else f"{value:<{width}}")
            else:
                cells.append(f"{fmt(value, spec):>{width}}")
        print(" ".join(cells))
    print("train: exp(mean training loss of the last epoch); valid/test: the run's final "
          "evaluation (eval.* of the config); wall: training + evaluation, this machine; "
          "s/epoch: training loop seconds / epochs.")


def main():
    args = parse_args()
    if not os.path.isfile(args.binary):
        fail(PROGRAM, f"no binary at {args.binary}: build it first (./setup.sh)", 2)
    for split in ("train", "valid", "test"):
        if not os.path.isfile(f"{args.data}/ptb.{split}.txt"):
            fail(PROGRAM, f"no {args.data}/ptb.{split}.txt: pass --data DIR (the folder with "
                          "Mikolov's ptb.{train,valid,test}.txt)", 2)
    rows = [train_one(args, path) for path in config_paths(args.configs)]
    print_table(args, rows)
    out = os.path.join(args.out, f"ptb_table-seed{args.seed}.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"data": args.data, "seed": args.seed, "threads": args.threads,
                   "overrides": args.overrides, "rows": rows, "published": PUBLISHED}, f,
                  indent=2)
    print(f"{PROGRAM}: results in {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""CPU training benchmark: elmo_fast against a PyTorch program of the same model, one invocation.

What it does:
  1. makes sure /usr/bin/python3 can `import torch` (installs Debian's python3-torch with apt-get
     when it cannot: the benchmark's own dependency, never part of setup.sh);
  2. trains elmo_fast on bench/cpu_train.toml (run.dir = a fresh folder, train.max_steps = --steps,
     train.threads = --threads) and reads <run.dir>/summary.json;
  3. trains bench/reference/torch_elmo_cpu.py with the sizes of the same TOML, on the corpus and
     vocab that run wrote, for the same steps and threads;
  4. prints a table (program, steps, tokens/s, median step ms) and the ratio elmo_fast / PyTorch,
     and writes bench/results/cpu_train.json (or --json).
tokens/s = timed steps * B * T / seconds of those steps (B*T input positions of one direction per
step; both directions process as many); both programs leave their first few steps out.
What it is not: a test. `--min-ratio R` turns a ratio below R into exit code 3 for CI use.

Run (from the repository root, after ./setup.sh):
  /usr/bin/python3 bench/bench_train_cpu.py [--steps 40] [--threads 2] [--config F]
      [--binary ./build/elmo_fast] [--set section.key=value ...] [--json OUT]
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import tomllib

import bench_util
from bench_util import fmt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "bench", "reference", "torch_elmo_cpu.py")
SYSTEM_PYTHON = "/usr/bin/python3"

# Defaults of the keys the reference needs, as in io/config.h (used when the TOML omits a key).
CONFIG_DEFAULTS = {
    "run": {"seed": 1234},
    "data": {"corpus": "builtin:synthetic", "vocab": ""},
    "model": {"embedding_dim": 0, "cell_size": 512, "projection_dim": 128, "layers": 2,
              "skip_connections": True, "dropout": 0.1, "bidirectional": True,
              "init_scale": 0.05, "embedding_init_scale": 1.0},
    "softmax": {"type": "sampled", "samples": 8192},
    "train": {"batch_size": 128, "unroll_steps": 20, "max_steps": 0, "threads": 0},
    "optimizer": {"type": "adagrad", "learning_rate": 0.2, "initial_accumulator": 1.0,
                  "epsilon": 1e-7, "clip_norm": 10.0},
}


def fail(message, code=1):
    bench_util.fail("bench_train_cpu", message, code)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=os.path.join(REPO, "bench", "cpu_train.toml"))
    p.add_argument("--binary", default="./build/elmo_fast", help="the elmo_fast executable")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of each program (default: the config's train.max_steps, "
                   "else 40)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each program (default: the config's train.threads, "
                   "else 2)")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternate the two programs this many times (A B A B ...) and report "
                   "medians and the median of the per-round ratios (a noisy shared machine "
                   "makes a single pair unreliable)")
    p.add_argument("--warmup", type=int, default=5,
                   help="first steps the PyTorch run leaves out of its timing (elmo_fast's "
                   "summary.json warmup_steps wins when it has one)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "default"),
                   default="passive",
                   help="OMP_WAIT_POLICY of the PyTorch run (default passive: with spinning "
                   "OpenMP threads PyTorch ran ~3x slower on this 2-core machine)")
    p.add_argument("--ours-omp-wait-policy", choices=("passive", "active", "default"),
                   default="default",
                   help="OMP_WAIT_POLICY of the elmo_fast run (default: leave the environment "
                   "alone, libgomp spins briefly then sleeps; forcing passive made elmo_fast "
                   "2x slower here). Each program runs in its own best setting.")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="config override, passed to elmo_fast and applied to the reference")
    p.add_argument("--json", default=os.path.join(REPO, "bench", "results", "cpu_train.json"),
                   help="where to write the result JSON")
    p.add_argument("--run-dir", help="elmo_fast's run.dir (default: a fresh temporary folder)")
    p.add_argument("--keep-run-dir", action="store_true",
                   help="keep the temporary run folder (corpus, vocab, logs) for inspection")
    p.add_argument("--python", default=SYSTEM_PYTHON if os.path.exists(SYSTEM_PYTHON)
                   else sys.executable, help="interpreter of the PyTorch reference")
    p.add_argument("--no-install", action="store_true",
                   help="do not apt-get install python3-torch when torch is missing")
    p.add_argument("--min-ratio", type=float, default=0.0,
                   help="exit with code 3 when elmo_fast / PyTorch tokens/s is below this")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed per program")
    p.add_argument("--reference-only", action="store_true",
                   help="skip elmo_fast and run only the reference (needs --corpus)")
    p.add_argument("--corpus", help="with --reference-only: the training text")
    p.add_argument("--vocab", help="with --reference-only: the vocab (default: built from "
                   "the corpus)")
    a = p.parse_args()
    if a.reference_only and not a.corpus:
        p.error("--reference-only needs --corpus FILE")
    return a


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------

def parse_override(assignment):
    """'section.key=value' -> (section, key, value); value read as TOML, bare words as strings
    (the same rule as elmo_fast's --set)."""
    name, sep, text = assignment.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        fail(f"--set {assignment}: expected section.key=value", 2)
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key, value


def load_config(path, overrides):
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except OSError as e:
        fail(f"{path}: cannot read the config ({e.strerror}); pass --config FILE", 2)
    except tomllib.TOMLDecodeError as e:
        fail(f"{path}: {e}", 2)
    for assignment in overrides:
        section, key, value = parse_override(assignment)
        cfg.setdefault(section, {})[key] = value
    merged = {}
    for section, defaults in CONFIG_DEFAULTS.items():
        merged[section] = dict(defaults)
        merged[section].update(cfg.get(section, {}))
    for section, values in cfg.items():
        merged.setdefault(section, dict(values))
    return merged


def reference_flags(cfg, steps, threads, warmup):
    """The torch_elmo_cpu.py flags that reproduce the config's model and training step."""
    m, s, t, o = cfg["model"], cfg["softmax"], cfg["train"], cfg["optimizer"]
    if m["projection_dim"] <= 0:
        fail("model.projection_dim = 0 (no projection): the PyTorch reference needs the LSTMP "
             "model; set model.projection_dim > 0", 2)
    embedding_dim = m["embedding_dim"] or m["projection_dim"]
    if embedding_dim != m["projection_dim"]:
        fail(f"model.embedding_dim ({embedding_dim}) must equal model.projection_dim "
             f"({m['projection_dim']}) for the reference (E = P)", 2)
    if o["type"] != "adagrad":
        fail(f"optimizer.type = {o['type']!r}: the reference implements Adagrad only", 2)
    return [
        "--embedding-dim", str(embedding_dim), "--cell-size", str(m["cell_size"]),
        "--projection-dim", str(m["projection_dim"]), "--layers", str(m["layers"]),
        "--skip-connections", str(int(bool(m["skip_connections"]))),
        "--dropout", str(m["dropout"]), "--bidirectional", str(int(bool(m["bidirectional"]))),
        "--init-scale", str(m["init_scale"]),
        "--embedding-init-scale", str(m["embedding_init_scale"]),
        "--softmax", s["type"], "--samples", str(s["samples"]),
        "--batch-size", str(t["batch_size"]), "--unroll-steps", str(t["unroll_steps"]),
        "--learning-rate", str(o["learning_rate"]),
        "--initial-accumulator", str(o["initial_accumulator"]), "--epsilon", str(o["epsilon"]),
        "--clip-norm", str(o["clip_norm"]), "--seed", str(cfg["run"]["seed"]),
        "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads),
        "--log-every", str(max(1, min(10, steps // 4))),
    ]


def corpus_and_vocab(cfg, run_dir, config_path):
    """The training text and vocab elmo_fast used (summary.json names them)."""
    corpus = cfg["data"]["corpus"]
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if os.path.isfile(summary.get("train_corpus", "")) and os.path.isfile(summary.get("vocab", "")):
            return summary["train_corpus"], summary["vocab"]
    if corpus == "builtin:synthetic":
        fail("summary.json of the elmo_fast run does not name the generated corpus")
    elif not os.path.isabs(corpus) and not os.path.exists(corpus):
        corpus = os.path.join(os.path.dirname(os.path.abspath(config_path)), corpus)
    if not os.path.isfile(corpus):
        fail(f"training text {corpus} not found (data.corpus = {cfg['data']['corpus']!r}); the "
             "reference reads one file: use builtin:synthetic or a single text file")
    vocab = cfg["data"]["vocab"] or os.path.join(run_dir, "vocab.txt")
    if not os.path.isfile(vocab):
        fail(f"vocab {vocab} not found: elmo_fast should have written it into run.dir")
    return corpus, vocab


# ----------------------------------------------------------------------------------------------
# Running the programs
# ----------------------------------------------------------------------------------------------

def ensure_torch(python, allow_install):
    probe = [python, "-c", "import torch, numpy"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return
    if not allow_install:
        fail(f"{python} cannot import torch; install it with: apt-get install -y python3-torch")
    if python != SYSTEM_PYTHON:
        fail(f"{python} cannot import torch, and Debian's python3-torch installs for "
             f"{SYSTEM_PYTHON} only: pass --python {SYSTEM_PYTHON}")
    command = ["apt-get", "install", "-y", "-q", "python3-torch"]
    if os.geteuid() != 0:
        command = ["sudo", "-E"] + command
    print(f"bench_train_cpu: torch missing; running {' '.join(command)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(command, env=env).returncode != 0:
        update = (["sudo", "-E"] if os.geteuid() != 0 else []) + ["apt-get", "update", "-q"]
        subprocess.run(update, env=env)
        if subprocess.run(command, env=env).returncode != 0:
            fail("apt-get install python3-torch failed; install it by hand and rerun")
    if subprocess.run(probe, capture_output=True).returncode != 0:
        fail(f"python3-torch is installed but {python} still cannot import torch")


def program_env(a, threads, policy):
    """The environment of one program: the same thread counts; its OpenMP wait policy."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy.upper()
    return env




def median_step_ms_from_metrics(run_dir, tokens_per_step):
    """elmo_fast's median step time when summary.json has none: from metrics.jsonl intervals
    (tokens_per_s per log interval), leaving out the first interval (warm-up)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    rates = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec.get("tokens_per_s"), (int, float)) and rec["tokens_per_s"] > 0:
                rates.append(rec["tokens_per_s"])
    rates = rates[1:] if len(rates) > 1 else rates
    if not rates:
        return None
    return 1e3 * tokens_per_step / statistics.median(rates)


def run_ours(a, cfg, run_dir, steps, threads):
    binary = a.binary
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        fail(f"{binary}: no elmo_fast executable; build it with ./setup.sh or pass --binary")
    command = [binary, "--config", a.config]
    for assignment in a.overrides:
        command += ["--set", assignment]
    command += ["--set", f"run.dir={run_dir}", "--set", f"train.max_steps={steps}",
                "--set", f"train.threads={threads}"]
    bench_util.run_logged("bench_train_cpu", command, os.path.join(run_dir, "elmo_fast.log"),
                          a.timeout, "elmo_fast", program_env(a, threads, a.ours_omp_wait_policy))
    summary_path = os.path.join(run_dir, "summary.json")
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{summary_path}: cannot read elmo_fast's summary ({e})")
    for key in ("steps", "tokens_per_s"):
        if key not in summary:
            fail(f"{summary_path}: no '{key}' (expected steps, tokens, train_seconds, "
                 "tokens_per_s)")
    if summary["steps"] != steps:
        print(f"bench_train_cpu: warning: elmo_fast ran {summary['steps']} steps, asked {steps}",
              file=sys.stderr)
    tokens_per_step = cfg["train"]["batch_size"] * cfg["train"]["unroll_steps"]
    median_ms = summary.get("median_step_ms")
    if median_ms is None:
        median_ms = median_step_ms_from_metrics(run_dir, tokens_per_step)
    return {"program": "elmo_fast", "steps": summary["steps"],
            "warmup_steps": summary.get("warmup_steps"),
            "tokens_per_s": float(summary["tokens_per_s"]), "median_step_ms": median_ms,
            "summary": summary}


def run_reference(a, cfg, corpus, vocab, steps, threads, warmup, work_dir):
    out_json = os.path.join(work_dir, "pytorch.json")
    command = [a.python, REFERENCE, "--corpus", corpus, "--json-out", out_json]
    if vocab:
        command += ["--vocab", vocab]
    command += reference_flags(cfg, steps, threads, warmup)
    command += ["--omp-wait-policy", a.omp_wait_policy]
    bench_util.run_logged("bench_train_cpu", command, os.path.join(work_dir, "pytorch.log"),
                          a.timeout, "pytorch", program_env(a, threads, a.omp_wait_policy))
    with open(out_json, encoding="utf-8") as f:
        return json.load(f)


def machine_info():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "host": platform.node()}




def main():
    a = parse_args()
    cfg = load_config(a.config, a.overrides)
    steps = a.steps or cfg["train"]["max_steps"] or 40
    threads = a.threads or cfg["train"]["threads"] or 2
    if steps <= a.warmup:
        fail(f"--steps {steps} must exceed the warm-up ({a.warmup} steps)", 2)
    reference_flags(cfg, steps, threads, a.warmup)  # config problems show before any training
    ensure_torch(a.python, not a.no_install)

    temporary = a.run_dir is None
    run_dir = os.path.abspath(a.run_dir or tempfile.mkdtemp(prefix="elmo-bench-cpu-"))
    os.makedirs(run_dir, exist_ok=True)
    load_before = os.getloadavg()
    rounds_ours, rounds_ref = [], []
    try:
        for r in range(max(1, a.rounds)):
            ours = None
            warmup = a.warmup
            round_dir = os.path.join(run_dir, f"round-{r}")
            os.makedirs(round_dir, exist_ok=True)
            if a.reference_only:
                corpus, vocab = a.corpus, a.vocab
            else:
                ours = run_ours(a, cfg, round_dir, steps, threads)
                if isinstance(ours["warmup_steps"], int) and 0 <= ours["warmup_steps"] < steps:
                    warmup = ours["warmup_steps"]
                corpus, vocab = corpus_and_vocab(cfg, round_dir, a.config)
            rounds_ref.append(run_reference(a, cfg, corpus, vocab, steps, threads, warmup,
                                            round_dir))
            if ours:
                ours.pop("summary", None)
                rounds_ours.append(ours)
    finally:
        if temporary and not a.keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif temporary:
            print(f"bench_train_cpu: run folder kept: {run_dir}")
    load_after = os.getloadavg()

    t = cfg["train"]
    ref = rounds_ref[-1]
    print()
    print(f"CPU training, {threads} threads: B={t['batch_size']} T={t['unroll_steps']} "
          f"E=P={cfg['model']['projection_dim']} C={cfg['model']['cell_size']} "
          f"L={cfg['model']['layers']} S={cfg['softmax']['samples']} V={ref['vocab_size']}")
    print(f"{'round':>5} {'program':<12} {'steps':>6} {'timed':>6} {'tokens/s':>10} "
          f"{'median step ms':>15}")
    for i in range(len(rounds_ref)):
        rows = ([rounds_ours[i]] if rounds_ours else []) + [rounds_ref[i]]
        for r in rows:
            timed = r["steps"] - r["warmup_steps"] if r.get("warmup_steps") is not None else None
            print(f"{i:>5} {r['program']:<12} {r['steps']:>6} {fmt(timed, 'd'):>6} "
                  f"{r['tokens_per_s']:>10.0f} {fmt(r['median_step_ms'], '.1f'):>15}")
    ratios = [o["tokens_per_s"] / p["tokens_per_s"] for o, p in zip(rounds_ours, rounds_ref)]
    ratio = statistics.median(ratios) if ratios else None
    ours_median = statistics.median(o["tokens_per_s"] for o in rounds_ours) if rounds_ours else None
    ref_median = statistics.median(p["tokens_per_s"] for p in rounds_ref)
    print(f"median tokens/s: elmo_fast {fmt(ours_median, '.0f')}, pytorch {ref_median:.0f}")
    if ratio is not None:
        print(f"ratio elmo_fast / pytorch: median {ratio:.2f}x over {len(ratios)} rounds "
              f"(per round: {', '.join(f'{x:.2f}' for x in ratios)}; target >= 2x)")
    step_ratios = [p["median_step_ms"] / o["median_step_ms"] for o, p in
                   zip(rounds_ours, rounds_ref) if o.get("median_step_ms") and p.get("median_step_ms")]
    step_ratio = statistics.median(step_ratios) if step_ratios else None
    if step_ratio is not None:
        print(f"median step time ratio pytorch / elmo_fast: median {step_ratio:.2f}x (per round: "
              f"{', '.join(f'{x:.2f}' for x in step_ratios)}; robust to the occasional stalled "
              "interval of a shared machine)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(a shared machine makes both numbers noisy)")

    result = {
        "benchmark": "cpu_train",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": os.path.relpath(os.path.abspath(a.config), REPO),
        "overrides": a.overrides,
        "steps": steps,
        "threads": threads,
        "omp_wait_policy": {"pytorch": a.omp_wait_policy, "elmo_fast": a.ours_omp_wait_policy},
        "tokens_per_step": t["batch_size"] * t["unroll_steps"],
        "machine": dict(machine_info(), load_before=load_before[0], load_after=load_after[0]),
        "rounds": len(rounds_ref),
        "elmo_fast": rounds_ours,
        "pytorch": rounds_ref,
        "elmo_fast_median_tokens_per_s": ours_median,
        "pytorch_median_tokens_per_s": ref_median,
        "ratio_per_round": ratios,
        "median_step_ratio": step_ratio,
        "median_step_ratio_per_round": step_ratios,
        "ratio": ratio,
        "target_ratio": 2.0,
    }
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {a.json}")
    if ratio is not None and ratio < a.min_ratio:
        print(f"bench_train_cpu: ratio {ratio:.2f} is below --min-ratio {a.min_ratio}",
              file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""GPU training benchmark: elmo_fast against a PyTorch program of the same model, one invocation.

What it does, for each --precision (fp32, tf32, bf16; the same names as train.precision):
  1. writes a Zipfian text corpus and a vocabulary of V tokens (V = the config's; 793,471 for
     configs/elmo-1b.toml) into a work folder, so both programs train the same text at the real
     vocabulary size (the 1B Word data need not be on the machine);
  2. trains elmo_fast on --config (default configs/elmo-1b.toml) with --set overrides (that
     corpus and vocab, train.max_steps, train.device, train.precision, no evaluation,
     no intermediate checkpoints) and reads <run.dir>/summary.json: tokens_per_s,
     median_step_ms, peak_device_memory_bytes, device_name, precision;
  3. trains bench/reference/torch_elmo.py (cuDNN nn.LSTM(proj_size), sparse Adagrad, autocast)
     on the same text with the same sizes and precision, for the same number of steps;
  4. prints one table row per program and precision (tokens/s, median step ms, peak device
     memory, achieved TFLOP/s, MFU) and the ratio elmo_fast / PyTorch, and writes
     bench/results/train_gpu.json (--json to change it).

FLOP model (flops_per_token; REFERENCE.md "Performance anchors"): per input position and
direction, each LSTMP layer does the GEMMs W_x x (2 * in * 4C), W_h h (2 * P * 4C) and the
projection W_p (2 * C * P), the sampled softmax 2 * P * (S + 1) (S sampled logits and the true
one); a training token (one of the B * T positions of a step, both directions) costs 3 x the
forward GEMM FLOPs (backward = 2 x forward). Pointwise work, the embedding gather and the
optimizer are left out. At bilm-tf sizes this is 503.3 MFLOP per token (asserted below).
MFU = tokens/s x FLOP/token / the peak of the precision on the device: H100 SXM (and H200,
which has the same compute) BF16 989, TF32 495, FP32 67 TFLOP/s dense; an unknown device
(another GPU, the CPU) gets no MFU and a note.

--device cpu --quick trains a tiny model a few steps on the CPU (fp32: the CPU computes fp32
only) to check this program's plumbing on a machine without a GPU; its numbers say nothing
about GPU speed. --skip-without-torch exits 77 (CTest's skip code) when torch is missing.

Run (from the repository root, after ./setup.sh, on a machine with a GPU and torch):
  python3 bench/bench_train_gpu.py [--precision fp32 tf32 bf16] [--steps 60] [--config F]
  python3 bench/bench_train_gpu.py --device cpu --quick          # plumbing check, no GPU
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import tomllib

import bench_util
from bench_util import count_vocab, fmt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "bench", "reference", "torch_elmo.py")
PRECISIONS = ("fp32", "tf32", "bf16")
SKIP_CODE = 77
# The 1B Word Benchmark vocabulary (REFERENCE.md), elmo-1b's V when its vocab file is absent.
ELMO_1B_VOCAB = 793471
# --quick: a tiny biLM that trains a few steps on 2 CPU cores in seconds.
QUICK_OVERRIDES = [
    "model.embedding_dim=16", "model.projection_dim=16", "model.cell_size=32", "model.layers=2",
    "softmax.type=sampled", "softmax.samples=20", "train.batch_size=4", "train.unroll_steps=5",
]
QUICK_VOCAB, QUICK_STEPS, QUICK_WARMUP = 300, 6, 2

# Dense peaks in FLOP/s by precision (REFERENCE.md: H100 SXM). H200 SXM has the same GH100
# compute (it differs in memory), so the same numbers.
HOPPER_SXM_PEAKS = {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12}


def fail(message, code=1):
    bench_util.fail("bench_train_gpu", message, code)


# ----------------------------------------------------------------------------------------------
# FLOP model and peaks
# ----------------------------------------------------------------------------------------------

def flops_per_token(model, softmax, vocab_size):
    """Training FLOPs per input position (both directions), from the config's [model] and
    [softmax] tables: 3 x the forward GEMM FLOPs (see the module doc)."""
    C, P, L = model["cell_size"], model["projection_dim"], model["layers"]
    out = P if P > 0 else C                       # width of each layer's output
    E = model["embedding_dim"] or out
    directions = 2 if model["bidirectional"] else 1
    per_direction = 0
    for layer in range(L):
        width_in = E if layer == 0 else out
        per_direction += 2 * width_in * 4 * C     # W_x x_t            [4C, in]
        per_direction += 2 * out * 4 * C         # W_h h_{t-1}        [4C, P]
        if P > 0:
            per_direction += 2 * C * P            # W_p (o * tanh c)   [P, C]
    if softmax["type"] == "sampled":
        per_direction += 2 * out * (softmax["samples"] + 1)   # S sampled logits + the true one
    else:
        per_direction += 2 * out * vocab_size                 # every class
    return 3 * directions * per_direction


BILM_TF_SIZES = ({"cell_size": 4096, "projection_dim": 512, "layers": 2, "embedding_dim": 0,
                  "bidirectional": True}, {"type": "sampled", "samples": 8192})
# REFERENCE.md: forward 37.75 MFLOP per layer-direction x 4 + 16.8 softmax = 168; x 3 = ~503.
assert abs(flops_per_token(*BILM_TF_SIZES, ELMO_1B_VOCAB) / 503.3e6 - 1) < 1e-3, \
    "the FLOP model must give ~503 MFLOP per token at bilm-tf sizes"


def peak_flops(device_name, precision):
    """(peak FLOP/s or None, what the peak is or why there is none)."""
    name = (device_name or "").upper()
    if "H100" in name and "PCIE" not in name and "NVL" not in name:
        return HOPPER_SXM_PEAKS[precision], f"H100 SXM {precision} dense"
    if "H200" in name and "NVL" not in name:
        return HOPPER_SXM_PEAKS[precision], f"H200 SXM {precision} dense (= H100 SXM)"
    return None, (f"no peak known for {device_name!r} (only H100/H200 SXM): MFU omitted")


def self_test():
    """The checks the CTest bench_train_gpu_flop_model runs (no torch, no binary needed)."""
    f = flops_per_token(*BILM_TF_SIZES, ELMO_1B_VOCAB)
    assert f == 503322624, f
    # Ideal tokens/s of REFERENCE.md: ~1.97M at BF16, ~0.98M at TF32.
    assert abs(HOPPER_SXM_PEAKS["bf16"] / f / 1.97e6 - 1) < 0.01
    assert abs(HOPPER_SXM_PEAKS["tf32"] / f / 0.98e6 - 1) < 0.01
    model, softmax = BILM_TF_SIZES
    one_way = dict(model, bidirectional=False)
    assert flops_per_token(one_way, softmax, 0) * 2 == f
    full = flops_per_token(model, {"type": "full", "samples": 0}, 1000)
    assert full == f - 3 * 2 * 2 * 512 * 8193 + 3 * 2 * 2 * 512 * 1000
    plain = {"cell_size": 200, "projection_dim": 0, "layers": 1, "embedding_dim": 0,
             "bidirectional": False}  # a PTB-style LSTM: no projection, out = C
    assert flops_per_token(plain, {"type": "full", "samples": 0}, 10000) == \
        3 * (2 * 200 * 800 * 2 + 2 * 200 * 10000)
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H100", "NVIDIA H200", "NVIDIA H200 141GB"):
        for precision in PRECISIONS:
            assert peak_flops(name, precision)[0] == HOPPER_SXM_PEAKS[precision], name
    for name in ("NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA A100-SXM4-80GB", "cpu", None,
                 "Intel(R) Xeon(R) Processor"):
        peak, note = peak_flops(name, "bf16")
        assert peak is None and "MFU omitted" in note, name
    print(f"bench_train_gpu: self-test passed (bilm-tf sizes: {f / 1e6:.1f} MFLOP per token; "
          f"ideal {HOPPER_SXM_PEAKS['bf16'] / f / 1e6:.2f}M tokens/s at bf16 on an H100 SXM)")


# ----------------------------------------------------------------------------------------------
# Arguments and config
# ----------------------------------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=os.path.join(REPO, "configs", "elmo-1b.toml"))
    p.add_argument("--binary", default=os.path.join(REPO, "build", "elmo_fast"),
                   help="the elmo_fast executable")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --quick)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None,
                   help="precisions to measure, each with both programs (default: fp32 tf32 "
                   "bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of each program, warm-up included (default 60; "
                   f"--quick {QUICK_STEPS})")
    p.add_argument("--warmup", type=int, default=None,
                   help="PyTorch steps left out of its timing (default 10; --quick "
                   f"{QUICK_WARMUP}); elmo_fast leaves out its first step (summary.json "
                   "warmup_steps)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="V of the generated vocabulary (default: the config's data.vocab file's "
                   f"size when it exists, else synthetic.vocab_size + 3 for builtin:synthetic, "
                   f"else {ELMO_1B_VOCAB}, the 1B Word Benchmark's; --quick {QUICK_VOCAB})")
    p.add_argument("--zipf-exponent", type=float, default=1.0,
                   help="the generated text draws word k with weight (k+1)^-a")
    p.add_argument("--quick", action="store_true",
                   help="tiny model, few steps: a plumbing check (with --device cpu here)")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads of each program on --device cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="config override, passed to elmo_fast and applied to the reference")
    p.add_argument("--json", default=None,
                   help="where to write the result JSON (default bench/results/train_gpu.json; "
                   "--quick: bench/results/train_gpu_quick.json)")
    p.add_argument("--run-dir", help="work folder (default: a fresh temporary folder)")
    p.add_argument("--keep-run-dir", action="store_true",
                   help="keep the work folder: corpus, vocab, logs and elmo_fast's run folders "
                   "(with elmo-1b sizes each holds a ~7 GB final checkpoint)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter of the PyTorch reference (needs torch and numpy)")
    p.add_argument("--skip-without-torch", action="store_true",
                   help=f"exit {SKIP_CODE} (skipped) instead of failing when torch is missing")
    p.add_argument("--min-ratio", type=float, default=0.0,
                   help="exit with code 3 when a precision's elmo_fast / PyTorch tokens/s is "
                   "below this")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per program run")
    p.add_argument("--self-test", action="store_true",
                   help="check the FLOP model and the peak table, then exit")
    a = p.parse_args()
    if a.self_test:
        return a
    a.steps = a.steps if a.steps is not None else (QUICK_STEPS if a.quick else 60)
    a.warmup = a.warmup if a.warmup is not None else (QUICK_WARMUP if a.quick else 10)
    if a.steps <= a.warmup:
        p.error(f"--steps ({a.steps}) must be larger than --warmup ({a.warmup})")
    if a.warmup < 1:
        p.error("--warmup must be >= 1 (elmo_fast leaves its first step out too)")
    on_cpu = a.device == "cpu"
    if not on_cpu and a.device != "cuda" and not a.device.startswith("cuda:"):
        p.error(f"--device {a.device}: expected cuda, cuda:N or cpu")
    if a.precision is None:
        a.precision = ["fp32"] if on_cpu else ["fp32", "tf32", "bf16"]
    if on_cpu and a.precision != ["fp32"]:
        p.error("--device cpu computes fp32 only (elmo_fast refuses train.precision = tf32/bf16 "
                "with train.device = \"cpu\"): drop --precision or pass --precision fp32")
    if on_cpu and not a.quick:
        p.error("--device cpu is a plumbing check: add --quick (elmo-1b sizes would take hours "
                "on a CPU)")
    if a.json is None:
        a.json = os.path.join(REPO, "bench", "results",
                              "train_gpu_quick.json" if a.quick else "train_gpu.json")
    return a


def resolved_config(a, overrides):
    """The effective config as elmo_fast reads it (`elmo_fast config`: every key, defaults
    filled in, validated by the real parser), as a dict."""
    command = [a.binary, "config", "--config", a.config]
    for assignment in overrides:
        command += ["--set", assignment]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{' '.join(command)} exited with {proc.returncode}:\n{proc.stderr.strip()}",
             proc.returncode)
    try:
        return tomllib.loads(proc.stdout)
    except tomllib.TOMLDecodeError as e:
        fail(f"cannot read the output of `elmo_fast config` as TOML ({e})")




def vocab_size_of(a, cfg):
    if a.vocab_size is not None:
        return a.vocab_size
    if a.quick:
        return QUICK_VOCAB
    vocab = cfg["data"]["vocab"]
    if vocab and os.path.isfile(vocab):
        return count_vocab(vocab)
    if cfg["data"]["corpus"] == "builtin:synthetic":
        return cfg["synthetic"]["vocab_size"] + 3
    return ELMO_1B_VOCAB


# ----------------------------------------------------------------------------------------------
# Data: one Zipfian text and vocab for both programs
# ----------------------------------------------------------------------------------------------

def write_data(work_dir, vocab_size, tokens_needed, exponent, seed):
    """vocab.txt: `</S> <S> <UNK>` then w3 .. w{V-1} (id = frequency rank, as the log-uniform
    sampler assumes); corpus.txt: sentences of 5..45 words (mean 25) drawn Zipf(exponent) over
    the words, at least `tokens_needed` tokens so no program wraps around an epoch."""
    vocab_path = os.path.join(work_dir, "vocab.txt")
    corpus_path = os.path.join(work_dir, "corpus.txt")
    words = [f"w{k}" for k in range(3, vocab_size)]
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("</S>\n<S>\n<UNK>\n")
        f.write("\n".join(words))
        f.write("\n")
    cumulative = list(itertools.accumulate((k + 1.0) ** -exponent for k in range(3, vocab_size)))
    rng = random.Random(seed)
    written = 0
    with open(corpus_path, "w", encoding="utf-8") as f:
        while written < tokens_needed:
            n = rng.randint(5, 45)
            f.write(" ".join(rng.choices(words, cum_weights=cumulative, k=n)))
            f.write("\n")
            written += n + 1  # the words and </S> as targets; <S> ... wn as inputs
    return corpus_path, vocab_path


# ----------------------------------------------------------------------------------------------
# Running the programs
# ----------------------------------------------------------------------------------------------

def torch_available(python):
    probe = [python, "-c", "import torch, numpy; print(torch.__version__)"]
    try:
        proc = subprocess.run(probe, capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None




def program_env(a):
    env = dict(os.environ)
    if a.device == "cpu":
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(a.threads)
    return env


def run_ours(a, base_overrides, precision, work_dir, corpus, vocab):
    run_dir = os.path.join(work_dir, f"elmo_fast-{precision}")
    command = [a.binary, "--config", a.config]
    for assignment in base_overrides + [
            f"run.dir={run_dir}", f"data.corpus={corpus}", f"data.vocab={vocab}", "data.valid=",
            "data.test=", "data.cache_dir=", f"train.max_steps={a.steps}",
            f"train.device={a.device}", f"train.precision={precision}",
            f"train.log_every={max(1, a.steps // 6)}", "train.eval_every=0",
            "checkpoint.every_steps=0", "checkpoint.every_minutes=0", "checkpoint.keep_last=1",
            "metrics.tensorboard=false"] + (
            [f"train.threads={a.threads}"] if a.device == "cpu" else []):
        command += ["--set", assignment]
    bench_util.run_logged("bench_train_gpu", command,
                          os.path.join(work_dir, f"elmo_fast-{precision}.log"), a.timeout,
                          f"elmo_fast {precision}", program_env(a))
    summary_path = os.path.join(run_dir, "summary.json")
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{summary_path}: cannot read elmo_fast's summary ({e})")
    for key in ("steps", "tokens_per_s", "device", "precision"):
        if key not in summary:
            fail(f"{summary_path}: no '{key}' (an elmo_fast older than train.precision?)")
    if summary["precision"] != precision:
        fail(f"elmo_fast trained in {summary['precision']}, asked {precision} "
             f"(device {summary['device']})")
    if not a.keep_run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)  # the final checkpoint is GBs at elmo-1b
    return {"program": "elmo_fast", "precision": precision, "steps": summary["steps"],
            "warmup_steps": summary.get("warmup_steps"),
            "tokens_per_s": float(summary["tokens_per_s"]),
            "median_step_ms": summary.get("median_step_ms"),
            "peak_memory_bytes": summary.get("peak_device_memory_bytes"),
            "device": summary["device"], "device_name": summary.get("device_name"),
            "final_train_loss": summary.get("final_train_loss")}


def reference_flags(cfg):
    m, s, t, o = cfg["model"], cfg["softmax"], cfg["train"], cfg["optimizer"]
    return [
        "--embedding-dim", str(m["embedding_dim"] or m["projection_dim"]),
        "--projection-dim", str(m["projection_dim"]), "--cell-size", str(m["cell_size"]),
        "--layers", str(m["layers"]),
        "--skip-connections", str(int(bool(m["skip_connections"]))),
        "--dropout", str(m["dropout"]), "--bidirectional", str(int(bool(m["bidirectional"]))),
        "--init-scale", str(m["init_scale"]),
        "--embedding-init-scale", str(m["embedding_init_scale"]),
        "--softmax", s["type"], "--samples", str(s["samples"]),
        "--batch-size", str(t["batch_size"]), "--unroll-steps", str(t["unroll_steps"]),
        "--learning-rate", str(o["learning_rate"]),
        "--initial-accumulator", str(o["initial_accumulator"]), "--epsilon", str(o["epsilon"]),
        "--clip-norm", str(o["clip_norm"]), "--seed", str(cfg["run"]["seed"]),
    ]


def check_reference_can_run(cfg):
    """Config problems the reference cannot model, before anything trains."""
    m, o = cfg["model"], cfg["optimizer"]
    if m["projection_dim"] <= 0:
        fail("model.projection_dim = 0 (no projection): the PyTorch reference is the LSTMP model; "
             "set model.projection_dim > 0", 2)
    if (m["embedding_dim"] or m["projection_dim"]) != m["projection_dim"]:
        fail(f"model.embedding_dim ({m['embedding_dim']}) must equal model.projection_dim "
             f"({m['projection_dim']}) for the reference (E = P)", 2)
    if o["type"] != "adagrad":
        fail(f"optimizer.type = {o['type']!r}: the reference implements Adagrad only", 2)


def run_reference(a, cfg, precision, work_dir, corpus, vocab):
    out_json = os.path.join(work_dir, f"pytorch-{precision}.json")
    command = [a.python, REFERENCE, "--device", a.device, "--precision", precision,
               "--corpus", corpus, "--vocab", vocab] + reference_flags(cfg) + [
               "--steps", str(a.steps - a.warmup), "--warmup", str(a.warmup),
               "--log-every", str(max(1, a.steps // 6)), "--json-out", out_json]
    if a.device == "cpu":
        command += ["--threads", str(a.threads)]
    bench_util.run_logged("bench_train_gpu", command,
                          os.path.join(work_dir, f"pytorch-{precision}.log"), a.timeout,
                          f"pytorch {precision}", program_env(a))
    with open(out_json, encoding="utf-8") as f:
        r = json.load(f)
    return {"program": "pytorch", "precision": precision, "steps": r["steps"],
            "warmup_steps": r["warmup_steps"], "tokens_per_s": r["tokens_per_s"],
            "median_step_ms": r["median_step_ms"], "peak_memory_bytes": r["peak_memory_bytes"],
            "device": r["device"], "device_name": r["device_name"],
            "torch_version": r["torch_version"], "final_train_loss": r["last_loss"]}


def add_flops(row, flops, device_name):
    row["model_tflops_per_s"] = row["tokens_per_s"] * flops / 1e12
    peak, note = peak_flops(device_name, row["precision"])
    row["peak_tflops_per_s"] = None if peak is None else peak / 1e12
    row["mfu"] = None if peak is None else row["tokens_per_s"] * flops / peak
    return note




def main():
    a = parse_args()
    if a.self_test:
        self_test()
        return
    torch_version = torch_available(a.python)
    if torch_version is None:
        message = (f"{a.python} cannot import torch and numpy: the PyTorch reference needs them "
                   "(pass --python PATH to an interpreter that has them; the CTest "
                   "bench_train_gpu_quick_cpu uses the CMake cache variable ELMO_BENCH_PYTHON)")
        if a.skip_without_torch:
            print(f"bench_train_gpu: SKIP: {message}")
            sys.exit(SKIP_CODE)
        fail(message)
    if not os.path.isfile(a.binary) or not os.access(a.binary, os.X_OK):
        fail(f"{a.binary}: no elmo_fast executable; build it with ./setup.sh or pass --binary")

    base_overrides = (QUICK_OVERRIDES if a.quick else []) + a.overrides
    cfg = resolved_config(a, base_overrides)
    check_reference_can_run(cfg)
    V = vocab_size_of(a, cfg)
    if cfg["softmax"]["type"] == "sampled" and cfg["softmax"]["samples"] >= V:
        fail(f"softmax.samples = {cfg['softmax']['samples']} must be < the vocab size {V}", 2)
    flops = flops_per_token(cfg["model"], cfg["softmax"], V)
    t = cfg["train"]
    tokens_per_step = t["batch_size"] * t["unroll_steps"]

    temporary = a.run_dir is None
    work_dir = os.path.abspath(a.run_dir or tempfile.mkdtemp(prefix="elmo-bench-gpu-"))
    os.makedirs(work_dir, exist_ok=True)
    rows, notes = [], set()
    try:
        corpus, vocab = write_data(work_dir, V, int(1.05 * a.steps * tokens_per_step) + 100,
                                   a.zipf_exponent, cfg["run"]["seed"])
        for precision in a.precision:
            ours = run_ours(a, base_overrides, precision, work_dir, corpus, vocab)
            ref = run_reference(a, cfg, precision, work_dir, corpus, vocab)
            name = ours["device_name"] or ref["device_name"]
            for row in (ours, ref):
                notes.add(add_flops(row, flops, name))
            ours["ratio"] = ours["tokens_per_s"] / ref["tokens_per_s"]
            rows += [ours, ref]
    finally:
        if temporary and not a.keep_run_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
        elif temporary:
            print(f"bench_train_gpu: work folder kept: {work_dir}")

    m, s = cfg["model"], cfg["softmax"]
    device_name = rows[0]["device_name"] or rows[1]["device_name"]
    print()
    title = ("Plumbing check on the CPU (tiny model; not a GPU measurement)"
             if a.device == "cpu" else "GPU training")
    print(f"{title} on {device_name}: B={t['batch_size']} T={t['unroll_steps']} "
          f"E=P={m['projection_dim']} C={m['cell_size']} L={m['layers']} "
          f"S={s['samples'] if s['type'] == 'sampled' else 'full'} V={V}; "
          f"{flops / 1e6:.1f} MFLOP per token")
    print(f"{'precision':<9} {'program':<10} {'steps':>5} {'timed':>5} {'tokens/s':>11} "
          f"{'step ms':>9} {'peak MiB':>9} {'TFLOP/s':>8} {'MFU':>6}")
    for r in rows:
        timed = r["steps"] - r["warmup_steps"] if r.get("warmup_steps") is not None else None
        peak_mib = None if r["peak_memory_bytes"] is None else r["peak_memory_bytes"] / 2**20
        mfu = None if r["mfu"] is None else 100 * r["mfu"]
        print(f"{r['precision']:<9} {r['program']:<10} {r['steps']:>5} {fmt(timed, 'd'):>5} "
              f"{r['tokens_per_s']:>11.0f} {fmt(r['median_step_ms'], '.1f'):>9} "
              f"{fmt(peak_mib, '.0f'):>9} {r['model_tflops_per_s']:>8.2f} "
              f"{fmt(mfu, '.1f') + ('%' if mfu is not None else ''):>6}")
    ratios = {r["precision"]: r["ratio"] for r in rows if r["program"] == "elmo_fast"}
    print("ratio elmo_fast / pytorch (tokens/s): " +
          ", ".join(f"{p} {x:.2f}x" for p, x in ratios.items()))
    for note in sorted(notes):
        print(f"MFU: {note}")

    result = {
        "benchmark": "train_gpu",
        "plumbing_check_only": a.device == "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": os.path.relpath(os.path.abspath(a.config), REPO),
        "overrides": base_overrides,
        "device": a.device,
        "device_name": device_name,
        "torch_version": torch_version,
        "host": platform.node(),
        "steps": a.steps,
        "pytorch_warmup_steps": a.warmup,
        "vocab_size": V,
        "tokens_per_step": tokens_per_step,
        "model_flops_per_token": flops,
        "mfu_notes": sorted(notes),
        "rows": rows,
        "ratio_by_precision": ratios,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {a.json}")
    low = [p for p, x in ratios.items() if x < a.min_ratio]
    if low:
        print(f"bench_train_gpu: ratio below --min-ratio {a.min_ratio} for {', '.join(low)}",
              file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch reference for the GPU training benchmark: the elmo_fast biLM on one device.

What it is: the model of DESIGN.md section 4 trained the way a PyTorch user would on a GPU
(cuDNN nn.LSTM with proj_size, sparse nn.Embedding tables, torch.optim.Adagrad, autocast for
bf16), so bench/bench_train_gpu.py can compare elmo_fast's tokens/s and memory with it in the
same invocation. It also runs on the CPU (--device cpu, tiny sizes) so its plumbing can be
checked on a machine without a GPU.
What it is not: a trainer (no eval, no checkpoints), nor bit-compatible with elmo_fast (other
random streams): it does the same work per step, not the same arithmetic.

Model, per step (V vocab, P = E projection, C cell, L layers, B rows, T unroll, S samples):
  embedding [V, P] (sparse grad) -> per direction (forward; backward on its own streams) L
  nn.LSTM(in, C, proj_size=P) modules, dropout on each layer's input, residual on layers > 0
  (adds the dropped input), dropout on the top output, (h, c) carried across batches, detached
  -> one sampled softmax [V, P] + bias [V] (sparse grads) shared by both directions: S unique
  log-uniform ids per step, P(k) = (ln(k+2) - ln(k+1)) / ln(V+1), drawn on the device, shared
  by the batch; logits minus log expected count -expm1(tries * log1p(-P(k))); sampled ids equal
  to a row's target masked out; loss = 0.5 (mean_fwd + mean_bwd), backward of loss * T; global
  grad-norm clip over dense + coalesced sparse grads; Adagrad, sparse for the three tables.
  The embedding/LSTM/softmax modules are bench/reference/torch_elmo_cpu.py's (one definition of
  the model for both references); this file adds the device, the precision, the device-side
  sampler, the synthetic data and the timing.
Differences that favour PyTorch: nn.LSTM has no cell or projection clip (elmo_fast clips at
model.cell_clip / model.proj_clip); PyTorch keeps two bias vectors per layer (negligible).

Precision (--precision; the same names as elmo_fast's train.precision):
  fp32  torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False (exact f32 GEMMs and
        cuDNN LSTM math)
  tf32  both True: tensor cores round GEMM inputs to TF32
  bf16  torch.autocast(dtype=bfloat16) around the forward pass (GEMMs and cuDNN LSTM in bf16,
        f32 master weights and optimizer), TF32 off for what stays f32
  On the CPU, fp32 and tf32 compute the same f32 (there is no TF32 there); bf16 autocasts.

Data: by default synthetic token ids, each of the D = 2 directions B independent streams of ids
drawn Zipf(--zipf-exponent) by frequency rank (id k has weight (k+1)^-a: id = rank, as the
log-uniform sampler assumes), generated before the timed steps. With --corpus FILE (and
--vocab FILE) it trains on text with bilm-tf packing instead (torch_elmo_cpu.py's batcher,
batched on the host inside the timed step, as elmo_fast batches on the host).

Sizes: built-in defaults are configs/elmo-1b.toml's (bilm-tf: V 793,471, E = P 512, C 4096,
2 layers, B 128, T 20, S 8192); --config FILE reads another TOML (tomllib; keys it omits take
elmo_fast's defaults from io/config.h); every size flag overrides both.

Timing: --warmup steps first (cuDNN/cuBLAS set-up, allocator growth), then --steps timed steps;
each step ends with torch.cuda.synchronize() (the sampler's torch.unique synchronises anyway),
so step times are wall times of complete steps. tokens/s = timed steps * B * T / their seconds
(B * T input positions of one direction per step, as elmo_fast counts). Peak memory is
torch.cuda.max_memory_allocated over the whole run (parameters, optimizer state, activations).

Run:  python3 bench/reference/torch_elmo.py --precision bf16 [--steps 50 --warmup 10]
      python3 bench/reference/torch_elmo.py --device cpu --vocab-size 500 --embedding-dim 16 \\
          --cell-size 32 --batch-size 4 --unroll-steps 5 --samples 20 --steps 4 --warmup 1
It prints the loss every --log-every steps, a result line and one JSON line (--json-out FILE).
"""

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/
from bench_util import count_vocab  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# elmo-1b.toml's sizes (the defaults when no --config is given) and the 1B Word Benchmark's
# vocabulary size (REFERENCE.md: 793,471 tokens, <S> </S> <UNK> included).
ELMO_1B_VOCAB = 793471
# elmo_fast's defaults (io/config.h) of the keys this program reads, for a --config that omits
# them.
ELMO_FAST_DEFAULTS = {
    "run": {"seed": 1234},
    "data": {"corpus": "builtin:synthetic", "vocab": ""},
    "synthetic": {"vocab_size": 2000},
    "model": {"embedding_dim": 0, "cell_size": 512, "projection_dim": 128, "layers": 2,
              "skip_connections": True, "dropout": 0.1, "bidirectional": True,
              "init_scale": 0.05, "embedding_init_scale": 1.0},
    "softmax": {"type": "sampled", "samples": 8192},
    "train": {"batch_size": 128, "unroll_steps": 20, "precision": "fp32"},
    "optimizer": {"type": "adagrad", "learning_rate": 0.2, "initial_accumulator": 1.0,
                  "epsilon": 1e-7, "clip_norm": 10.0},
}
# flag -> (section, key) of the config it defaults from.
FLAG_KEYS = {
    "embedding_dim": ("model", "embedding_dim"), "cell_size": ("model", "cell_size"),
    "projection_dim": ("model", "projection_dim"), "layers": ("model", "layers"),
    "skip_connections": ("model", "skip_connections"), "dropout": ("model", "dropout"),
    "bidirectional": ("model", "bidirectional"), "init_scale": ("model", "init_scale"),
    "embedding_init_scale": ("model", "embedding_init_scale"), "softmax": ("softmax", "type"),
    "samples": ("softmax", "samples"), "batch_size": ("train", "batch_size"),
    "unroll_steps": ("train", "unroll_steps"), "precision": ("train", "precision"),
    "learning_rate": ("optimizer", "learning_rate"),
    "initial_accumulator": ("optimizer", "initial_accumulator"),
    "epsilon": ("optimizer", "epsilon"), "clip_norm": ("optimizer", "clip_norm"),
    "seed": ("run", "seed"),
}
PRECISIONS = ("fp32", "tf32", "bf16")


def fail(message, code=2):
    print(f"torch_elmo: {message}", file=sys.stderr)
    sys.exit(code)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Size flags default to --config's values, else to "
                                "configs/elmo-1b.toml's.")
    p.add_argument("--config", help="elmo_fast TOML to take sizes from (default: elmo-1b sizes)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--precision", choices=PRECISIONS, help="GEMM precision (default: the "
                   "config's train.precision, else fp32)")
    p.add_argument("--vocab-size", type=int, help="V (default: lines of --vocab, or of the "
                   "config's data.vocab when that file exists, else 793471)")
    p.add_argument("--embedding-dim", type=int, help="E (0 = P; either of E and P alone sets both)")
    p.add_argument("--cell-size", type=int, help="C")
    p.add_argument("--projection-dim", type=int, help="P (must be > 0 and equal E)")
    p.add_argument("--layers", type=int)
    p.add_argument("--skip-connections", type=int, choices=(0, 1))
    p.add_argument("--dropout", type=float)
    p.add_argument("--bidirectional", type=int, choices=(0, 1))
    p.add_argument("--init-scale", type=float)
    p.add_argument("--embedding-init-scale", type=float)
    p.add_argument("--softmax", choices=("sampled", "full"))
    p.add_argument("--samples", type=int, help="S unique negative samples per step")
    p.add_argument("--batch-size", type=int, help="B rows")
    p.add_argument("--unroll-steps", type=int, help="T")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--initial-accumulator", type=float)
    p.add_argument("--epsilon", type=float, help="Adagrad epsilon")
    p.add_argument("--clip-norm", type=float, help="global grad-norm clip (0: off)")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, default=50, help="timed steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    p.add_argument("--zipf-exponent", type=float, default=1.0,
                   help="synthetic ids: weight of id k is (k+1)^-a")
    p.add_argument("--corpus", help="train on this text (bilm-tf packing) instead of "
                   "synthetic ids")
    p.add_argument("--vocab", help="with --corpus: its vocab, one token per line, most "
                   "frequent first (default: built from the corpus)")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--json-out", help="also write the result JSON to this file")
    a = p.parse_args(argv)
    resolve_sizes(p, a)
    return a


def read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        fail(f"--config {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        fail(f"--config {path}: {e}")




def resolve_sizes(p, a):
    """Flags over --config over defaults (elmo-1b.toml's without --config)."""
    if a.config:
        cfg = read_toml(a.config)
        values = {s: dict(v) for s, v in ELMO_FAST_DEFAULTS.items()}
        for section, table in cfg.items():
            if isinstance(table, dict):
                values.setdefault(section, {}).update(table)
    else:
        values = {s: dict(v) for s, v in ELMO_FAST_DEFAULTS.items()}
        values["model"].update(embedding_dim=0, cell_size=4096, projection_dim=512)
        values["data"]["vocab"] = ""
        values["data"]["corpus"] = "(elmo-1b sizes)"
    # E = P here: either flag alone sets both.
    if a.embedding_dim is not None and a.projection_dim is None:
        a.projection_dim = a.embedding_dim
    if a.projection_dim is not None and a.embedding_dim is None:
        a.embedding_dim = a.projection_dim
    for flag, (section, key) in FLAG_KEYS.items():
        if getattr(a, flag) is None:
            value = values[section][key]
            if flag in ("skip_connections", "bidirectional"):
                value = int(bool(value))
            setattr(a, flag, value)
    if a.projection_dim <= 0:
        p.error("projection_dim must be > 0: the reference is the LSTMP model (nn.LSTM "
                "proj_size)")
    if a.embedding_dim == 0:
        a.embedding_dim = a.projection_dim
    if a.embedding_dim != a.projection_dim:
        p.error(f"embedding_dim ({a.embedding_dim}) must equal projection_dim "
                f"({a.projection_dim}): the embedding feeds layer 1 and the residual adds it")
    if a.precision not in PRECISIONS:
        p.error(f"precision {a.precision!r} is not one of {', '.join(PRECISIONS)}")
    if a.corpus and a.vocab_size is not None:
        p.error("--vocab-size and --corpus: with a corpus the vocab size is that of --vocab (or "
                "of the vocab built from the corpus); drop --vocab-size")
    if a.vocab and not a.corpus:
        p.error("--vocab needs --corpus (synthetic ids take --vocab-size)")
    if a.vocab_size is None:
        config_vocab = values["data"].get("vocab") or ""
        if a.corpus:
            a.vocab_size = None  # from --vocab or the corpus, once loaded
        elif config_vocab and os.path.isfile(config_vocab):
            a.vocab_size = count_vocab(config_vocab)
        elif a.config and values["data"].get("corpus") == "builtin:synthetic":
            a.vocab_size = int(values["synthetic"]["vocab_size"]) + 3
        else:
            a.vocab_size = ELMO_1B_VOCAB
    for name in ("embedding_dim", "cell_size", "layers", "batch_size", "unroll_steps",
                 "samples", "steps", "log_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    if not 0.0 <= a.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    if a.vocab_size is not None and a.softmax == "sampled" and a.samples >= a.vocab_size:
        p.error(f"--samples {a.samples} must be < the vocab size {a.vocab_size}")


ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else None

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_elmo_cpu as cpu_ref  # noqa: E402  (model, vocab and packing of the CPU reference)


# ----------------------------------------------------------------------------------------------
# Device-side pieces
# ----------------------------------------------------------------------------------------------

class DeviceBiLM(cpu_ref.BiLM):
    """torch_elmo_cpu's BiLM with its carried state created on the model's device."""

    def zero_state(self, batch_size):
        P, C = self.a.projection_dim, self.a.cell_size
        dev = self.embedding.weight.device
        return [[(torch.zeros(1, batch_size, P, device=dev),
                  torch.zeros(1, batch_size, C, device=dev))
                 for _ in range(self.a.layers)] for _ in range(self.directions)]


class DeviceLogUniformSampler:
    """S unique ids from P(k) = (ln(k+2) - ln(k+1)) / ln(V+1), drawn on the device in rounds;
    the result equals drawing one id at a time until S are distinct (tries = draws needed)."""

    def __init__(self, vocab_size, num_samples, seed, device):
        if num_samples >= vocab_size:
            fail(f"--samples {num_samples} must be < the vocab size {vocab_size}")
        self.V, self.S, self.device = vocab_size, num_samples, device
        self.log_range = math.log(vocab_size + 1.0)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self.round_size = 2 * num_samples

    def sample(self):
        """-> (ids [S] int64, tries: 0-dim int64 tensor), both on the device."""
        draws = torch.empty(0, dtype=torch.int64, device=self.device)
        while True:
            u = torch.rand(self.round_size, generator=self.gen, device=self.device,
                           dtype=torch.float64)
            new = torch.floor(torch.exp(u * self.log_range)).to(torch.int64) - 1
            draws = torch.cat([draws, new.clamp_(0, self.V - 1)])
            # Position of each distinct id's first draw: a stable sort keeps equal ids in draw
            # order, so the first of each run of equal values is that id's first draw.
            values, order = torch.sort(draws, stable=True)
            starts = torch.ones_like(values, dtype=torch.bool)
            starts[1:] = values[1:] != values[:-1]
            first = order[starts]                        # boolean index: synchronises
            if len(first) < self.S:
                continue
            first = first.sort().values[:self.S]        # first draws of the first S distinct ids
            tries = first[-1] + 1
            self.round_size = max(self.S, int(1.1 * len(draws)))
            return draws[first], tries

    def log_expected_count(self, ids, tries):
        """log(-expm1(tries * log1p(-P(k)))) for ids on the device, float32."""
        k = ids.to(torch.float64)
        p = torch.log((k + 2.0) / (k + 1.0)) / self.log_range
        return torch.log(-torch.expm1(tries.to(torch.float64) * torch.log1p(-p))).float()




def clip_global_norm_(params, max_norm):
    """TF clip_by_global_norm over dense and coalesced sparse grads, on the device (no host
    round trip); returns the norm as a 0-dim tensor."""
    squares = []
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            g = g.coalesce()
            p.grad = g
            squares.append(g._values().float().pow(2).sum())
        else:
            squares.append(g.float().pow(2).sum())
    norm = torch.stack(squares).sum().sqrt()
    if max_norm > 0:
        scale = torch.clamp(max_norm / torch.clamp(norm, min=1e-30), max=1.0)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
    return norm


def precision_context(precision, device_type):
    """Sets the TF32 switches and returns the autocast context of the forward pass."""
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

class ZipfBatches:
    """D x B streams of Zipf ids made before timing; batch s = the next T ids of every stream,
    targets shifted by one. [D, T, B] int64 on the device."""

    def __init__(self, directions, rows, unroll, steps, vocab_size, exponent, seed, device):
        rng = np.random.default_rng(seed)
        weights = np.arange(1, vocab_size + 1, dtype=np.float64) ** -exponent
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        length = steps * unroll + 1
        ids = np.searchsorted(cdf, rng.random(directions * rows * length), side="right")
        ids = np.minimum(ids, vocab_size - 1).reshape(directions, rows, length)
        self.streams = torch.from_numpy(ids).to(device)                  # [D, B, steps*T + 1]
        self.T, self.position = unroll, 0

    def next_batch(self):
        s, T = self.position, self.T
        self.position += T
        inputs = self.streams[:, :, s:s + T].transpose(1, 2).contiguous()        # [D, T, B]
        targets = self.streams[:, :, s + 1:s + T + 1].transpose(1, 2).contiguous()
        return inputs, targets


class CorpusBatches:
    """Text with bilm-tf packing (torch_elmo_cpu's batcher), batched on the host per step."""

    def __init__(self, a, device):
        words = cpu_ref.load_vocab(a.vocab) if a.vocab else cpu_ref.build_vocab(a.corpus)
        word_to_id = {}
        for i, w in enumerate(words):
            word_to_id.setdefault(w, i)
        self.vocab_size = len(words)
        sentences = cpu_ref.load_sentences(a.corpus, word_to_id)
        self.batchers = [cpu_ref.PackedBatcher(sentences, a.batch_size, a.unroll_steps)]
        if a.bidirectional:
            self.batchers.append(cpu_ref.PackedBatcher([s[::-1].copy() for s in sentences],
                                                       a.batch_size, a.unroll_steps))
        self.device = device

    def next_batch(self):
        batches = [b.next_batch() for b in self.batchers]
        inputs = torch.from_numpy(np.stack([x for x, _ in batches])).to(self.device)
        targets = torch.from_numpy(np.stack([y for _, y in batches])).to(self.device)
        return inputs, targets                                            # [D, T, B]


# ----------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------

def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return cpu


def main(a):
    try:
        device = torch.device(a.device)
    except RuntimeError as e:
        fail(f"--device {a.device}: {e}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"--device {a.device}: torch {torch.__version__} sees no CUDA device "
                 "(use --device cpu with tiny sizes to check the program here)", 1)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    elif device.type != "cpu":
        fail(f"--device {a.device}: expected cuda, cuda:N or cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    new_context = precision_context(a.precision, device.type)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_setup = time.perf_counter()

    total_steps = a.warmup + a.steps
    directions = 2 if a.bidirectional else 1
    if a.corpus:
        data = CorpusBatches(a, device)
        a.vocab_size = data.vocab_size
        data_name = os.path.basename(a.corpus)
        if a.softmax == "sampled" and a.samples >= a.vocab_size:
            fail(f"--samples {a.samples} must be < the vocab size {a.vocab_size} of {a.corpus}")
    else:
        data = ZipfBatches(directions, a.batch_size, a.unroll_steps, total_steps, a.vocab_size,
                           a.zipf_exponent, a.seed, device)
        data_name = f"zipf({a.zipf_exponent})"
    V = a.vocab_size

    model = DeviceBiLM(a, V).to(device)
    model.train()
    params = list(model.parameters())
    sparse_params = [p for n, p in model.named_parameters()
                     if n.startswith(("embedding.", "softmax_w.", "softmax_b."))]
    sparse_ids = {id(p) for p in sparse_params}
    dense_params = [p for p in params if id(p) not in sparse_ids]
    adagrad = dict(lr=a.learning_rate, initial_accumulator_value=a.initial_accumulator,
                   eps=a.epsilon)
    optimizers = [torch.optim.Adagrad(dense_params, **adagrad)]
    if sparse_params:
        optimizers.append(torch.optim.Adagrad(sparse_params, **adagrad))
    sampler = (DeviceLogUniformSampler(V, a.samples, a.seed, device)
               if a.softmax == "sampled" else None)
    state = model.zero_state(a.batch_size)
    sync()
    print(f"torch_elmo: torch {torch.__version__} on {device} ({device_name(device)}), "
          f"precision {a.precision}; V={V} E=P={a.projection_dim} C={a.cell_size} L={a.layers} "
          f"B={a.batch_size} T={a.unroll_steps} S={a.samples if sampler else 'full'} "
          f"dirs={directions}; data {data_name}; "
          f"{sum(p.numel() for p in params)} parameters; setup "
          f"{time.perf_counter() - t_setup:.1f}s", flush=True)
    if a.precision == "tf32" and device.type == "cpu":
        print("torch_elmo: note: the CPU has no TF32; tf32 computes f32 there", flush=True)

    step_seconds, losses = [], []
    for step in range(1, total_steps + 1):
        t0 = time.perf_counter()
        inputs, targets = data.next_batch()                               # [D, T, B]
        with new_context():
            h, state = model(inputs, state)                               # [D, T, B, P]
            D, T, B, P = h.shape
            h = h.reshape(D, T * B, P)
            tg = targets.reshape(D, T * B)
            loss = (cpu_ref.sampled_softmax_loss(model, sampler, h, tg) if sampler
                    else cpu_ref.full_softmax_loss(model, h, tg))
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        (loss * a.unroll_steps).backward()
        grad_norm = clip_global_norm_(params, a.clip_norm)
        for opt in optimizers:
            opt.step()
        sync()
        step_seconds.append(time.perf_counter() - t0)
        loss_value = loss.item()
        losses.append(loss_value)
        if not math.isfinite(loss_value):
            fail(f"loss is {loss_value} at step {step}", 1)
        if step % a.log_every == 0 or step == total_steps:
            window = losses[-a.log_every:]
            print(f"step {step:6d}  loss {sum(window) / len(window):8.4f}  "
                  f"grad_norm {grad_norm.item():8.3f}  step_ms {1e3 * step_seconds[-1]:8.1f}"
                  f"{'  (warm-up)' if step <= a.warmup else ''}", flush=True)

    timed = step_seconds[a.warmup:]
    tokens_per_step = a.batch_size * a.unroll_steps
    tokens_per_s = len(timed) * tokens_per_step / sum(timed)
    peak = reserved = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        reserved = torch.cuda.max_memory_reserved(device)
    result = {
        "program": "pytorch",
        "torch_version": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "precision": a.precision,
        "threads": torch.get_num_threads(),
        "steps": total_steps,
        "warmup_steps": a.warmup,
        "timed_steps": len(timed),
        "tokens": len(timed) * tokens_per_step,
        "train_seconds": sum(timed),
        "tokens_per_s": tokens_per_s,
        "median_step_ms": 1e3 * float(np.median(timed)),
        "peak_memory_bytes": peak,
        "peak_memory_reserved_bytes": reserved,
        "first_loss": losses[0],
        "last_loss": sum(losses[-a.log_every:]) / len(losses[-a.log_every:]),
        "vocab_size": V,
        "data": data_name,
        "sizes": {"embedding_dim": a.embedding_dim, "projection_dim": a.projection_dim,
                  "cell_size": a.cell_size, "layers": a.layers, "batch_size": a.batch_size,
                  "unroll_steps": a.unroll_steps, "samples": a.samples, "softmax": a.softmax,
                  "dropout": a.dropout, "bidirectional": bool(a.bidirectional),
                  "skip_connections": bool(a.skip_connections)},
    }
    memory = "" if peak is None else f", peak memory {peak / 2**20:.0f} MiB"
    print(f"torch_elmo: {tokens_per_s:.0f} tokens/s over {len(timed)} timed steps "
          f"(median step {result['median_step_ms']:.1f} ms){memory}")
    print(json.dumps(result), flush=True)
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main(ARGS)

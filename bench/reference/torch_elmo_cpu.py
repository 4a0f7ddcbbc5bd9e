#!/usr/bin/python3
"""PyTorch reference for the CPU training benchmark: the elmo_fast biLM, trained the same way.

What it is: a standalone PyTorch training program of the model in DESIGN.md section 4, written
the way a PyTorch user would write it (nn.LSTM with proj_size, sparse nn.Embedding tables,
torch.optim.Adagrad), so bench/bench_train_cpu.py can compare elmo_fast's tokens/s with it in the
same invocation. It prints the loss every --log-every steps, tokens/s and one JSON line.
What it is not: a trainer anyone should use (no eval, no checkpoints) and not bit-compatible with
elmo_fast (different RNG streams); it does the same work per step, not the same arithmetic.

Model, per step (V vocab, P = E projection, C cell, B rows, T unroll, S samples):
  embedding [V, P] (sparse grad) -> per direction (fwd on the sentence streams, bwd on the
  reversed-sentence streams) L nn.LSTM(in, C, proj_size=P) layers, dropout on each layer's input,
  residual on layers > 0 (adds the dropped input, as bilm-tf's DropoutWrapper(ResidualWrapper)),
  dropout on the top output, (h, c) carried across batches and detached -> sampled softmax
  [V, P] + bias [V] (sparse grads) shared by both directions with S unique log-uniform samples per
  step, logits minus log expected count, accidental hits masked; loss = 0.5 (mean_fwd + mean_bwd),
  backward of loss * T; global grad-norm clip over dense + coalesced sparse grads; Adagrad.
Differences from elmo_fast that favour PyTorch: nn.LSTM has no cell/proj clipping (the clips are
skipped here), and PyTorch keeps two bias vectors per layer (negligible).

Timing: tokens/s = timed_steps * B * T / seconds of the timed steps, where the first --warmup
steps are excluded (allocator and BLAS warm-up); batching, sampling, forward, backward, clip and
the optimizer step are all inside the timed region. Threads: --threads for torch's OpenMP pool
and (before torch loads) OpenBLAS; OMP_WAIT_POLICY=PASSIVE unless --omp-wait-policy says
otherwise (spinning idle threads make every step many times slower on a busy machine).

Run: /usr/bin/python3 bench/reference/torch_elmo_cpu.py --corpus FILE [--vocab FILE] --steps 100
"""

import argparse
import json
import math
import os
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", required=True, help="training text, one sentence per line")
    p.add_argument("--vocab", help="vocab file, one token per line, most frequent first "
                   "(first field of each line); default: built from --corpus")
    p.add_argument("--embedding-dim", type=int, default=128, help="E (= P, the projection)")
    p.add_argument("--cell-size", type=int, default=512, help="C")
    p.add_argument("--projection-dim", type=int, default=None, help="P (default: E)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--skip-connections", type=int, choices=(0, 1), default=1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--bidirectional", type=int, choices=(0, 1), default=1)
    p.add_argument("--init-scale", type=float, default=0.05,
                   help="LSTM and softmax weights start uniform in +-init_scale")
    p.add_argument("--embedding-init-scale", type=float, default=1.0,
                   help="embedding rows start uniform in +-embedding_init_scale")
    p.add_argument("--softmax", choices=("sampled", "full"), default="sampled")
    p.add_argument("--samples", type=int, default=2048, help="S, unique negative samples")
    p.add_argument("--batch-size", type=int, default=32, help="B rows")
    p.add_argument("--unroll-steps", type=int, default=20, help="T")
    p.add_argument("--learning-rate", type=float, default=0.2)
    p.add_argument("--initial-accumulator", type=float, default=1.0)
    p.add_argument("--epsilon", type=float, default=1e-7, help="Adagrad epsilon")
    p.add_argument("--clip-norm", type=float, default=10.0, help="global grad-norm clip; 0: off")
    p.add_argument("--steps", type=int, default=40, help="training steps, warm-up included")
    p.add_argument("--warmup", type=int, default=5, help="first steps excluded from timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OpenBLAS threads inside one GEMM (default: --threads)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "default"),
                   default="passive",
                   help="OMP_WAIT_POLICY for torch's OpenMP pool; 'default' leaves the "
                   "environment alone (spin-waiting threads are very slow on a busy machine)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--json-out", help="also write the result JSON to this file")
    a = p.parse_args(argv)
    if a.projection_dim is None:
        a.projection_dim = a.embedding_dim
    if a.projection_dim != a.embedding_dim:
        p.error("--projection-dim must equal --embedding-dim (E = P: the embedding feeds layer 1 "
                "and the residual adds it)")
    if a.steps <= a.warmup:
        p.error(f"--steps ({a.steps}) must be larger than --warmup ({a.warmup})")
    for name in ("embedding_dim", "cell_size", "layers", "batch_size", "unroll_steps", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= a.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    return a


# Thread settings must reach OpenMP and OpenBLAS (Debian's torch calls the system OpenBLAS,
# which torch.set_num_threads does not reach) before torch loads them.
ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
    os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads or ARGS.threads)
    if ARGS.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = ARGS.omp_wait_policy.upper()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BOS, EOS, UNK = "<S>", "</S>", "<UNK>"


# ----------------------------------------------------------------------------------------------
# Data: vocab, corpus, bilm-tf packing
# ----------------------------------------------------------------------------------------------

def build_vocab(corpus_path):
    """Tokens of the corpus by frequency (ties by first appearance), specials first."""
    counts = {}
    with open(corpus_path, encoding="utf-8") as f:
        for line in f:
            for w in line.split():
                counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: -counts[w])  # stable: ties keep first appearance
    return [EOS, BOS, UNK] + [w for w in words if w not in (EOS, BOS, UNK)]


def load_vocab(path):
    """One token per line (first whitespace field); missing specials are added at the front."""
    words = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                words.append(fields[0])
    missing = [s for s in (EOS, BOS, UNK) if s not in set(words)]
    if missing:
        print(f"torch_elmo_cpu: {path}: adding missing {' '.join(missing)} at the front",
              file=sys.stderr)
    return missing + words


def load_sentences(corpus_path, word_to_id):
    """Each non-empty line -> int32 array `<S> w1 .. wn </S>`."""
    bos, eos, unk = word_to_id[BOS], word_to_id[EOS], word_to_id[UNK]
    sentences = []
    with open(corpus_path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if words:
                ids = [bos] + [word_to_id.get(w, unk) for w in words] + [eos]
                sentences.append(np.asarray(ids, dtype=np.int64))
    if not sentences:
        raise SystemExit(f"torch_elmo_cpu: {corpus_path}: no sentences (empty file?)")
    return sentences


class PackedBatcher:
    """bilm-tf packing: B endless row streams filled with consecutive sentences from one shared
    (cycling) sentence source; a batch is the next T inputs of every row, targets shifted by one;
    a sentence `<S> w1..wn </S>` contributes inputs `<S> w1..wn` and targets `w1..wn </S>`."""

    def __init__(self, sentences, batch_size, unroll_steps):
        self.sentences = sentences
        self.next_sentence = 0
        self.B, self.T = batch_size, unroll_steps
        self.rows = [None] * batch_size  # remaining part of each row's current sentence

    def _take_sentence(self):
        s = self.sentences[self.next_sentence]
        self.next_sentence = (self.next_sentence + 1) % len(self.sentences)
        return s

    def next_batch(self):
        inputs = np.empty((self.T, self.B), dtype=np.int64)   # [T, B] time-major
        targets = np.empty((self.T, self.B), dtype=np.int64)  # [T, B]
        for r in range(self.B):
            pos = 0
            while pos < self.T:
                cur = self.rows[r]
                if cur is None or len(cur) < 2:
                    cur = self._take_sentence()
                n = min(len(cur) - 1, self.T - pos)
                inputs[pos:pos + n, r] = cur[:n]
                targets[pos:pos + n, r] = cur[1:n + 1]
                self.rows[r] = cur[n:]
                pos += n
        return inputs, targets


# ----------------------------------------------------------------------------------------------
# Log-uniform unique sampler (TF semantics), vectorised
# ----------------------------------------------------------------------------------------------

class LogUniformSampler:
    """S unique ids from P(k) = (ln(k+2) - ln(k+1)) / ln(V+1), drawn in vectorised rounds; the
    result is the same as drawing one id at a time until S are distinct ("tries" draws)."""

    def __init__(self, vocab_size, num_samples, seed):
        if num_samples >= vocab_size:
            raise SystemExit(f"torch_elmo_cpu: --samples {num_samples} must be < vocab size "
                             f"{vocab_size} (use --softmax full)")
        self.V, self.S = vocab_size, num_samples
        self.log_range = math.log(vocab_size + 1.0)
        self.rng = np.random.default_rng(seed)
        self.round_size = 2 * num_samples

    def sample(self):
        draws = np.empty(0, dtype=np.int64)
        while True:
            u = self.rng.random(self.round_size)
            new = np.floor(np.exp(u * self.log_range)).astype(np.int64) - 1
            draws = np.concatenate([draws, np.clip(new, 0, self.V - 1)])
            uniq, first = np.unique(draws, return_index=True)
            if len(uniq) >= self.S:
                first.sort()
                tries = int(first[self.S - 1]) + 1
                ids = draws[first[:self.S]]
                # Keep the round size near what the draws needed, for the next step.
                self.round_size = max(self.S, int(1.1 * tries))
                return ids, tries

    def log_expected_count(self, ids, tries):
        """log(-expm1(tries * log1p(-P(k)))) for a LongTensor of ids."""
        k = ids.to(torch.float64)
        p = torch.log((k + 2.0) / (k + 1.0)) / self.log_range
        return torch.log(-torch.expm1(tries * torch.log1p(-p))).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

class BiLM(nn.Module):
    def __init__(self, a, vocab_size):
        super().__init__()
        P, C = a.projection_dim, a.cell_size
        self.a = a
        self.directions = 2 if a.bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, P, sparse=True)          # [V, P]
        self.lstms = nn.ModuleList([
            nn.ModuleList([nn.LSTM(P, C, proj_size=P, batch_first=False) for _ in range(a.layers)])
            for _ in range(self.directions)])
        if a.softmax == "sampled":
            self.softmax_w = nn.Embedding(vocab_size, P, sparse=True)      # [V, P]
            self.softmax_b = nn.Embedding(vocab_size, 1, sparse=True)      # [V, 1]
        else:
            self.softmax = nn.Linear(P, vocab_size)                         # [V, P], [V]
        s = a.init_scale
        with torch.no_grad():
            for prm in self.parameters():
                prm.uniform_(-s, s)
            self.embedding.weight.uniform_(-a.embedding_init_scale, a.embedding_init_scale)
            if a.softmax == "sampled":
                self.softmax_b.weight.zero_()
            else:
                self.softmax.bias.zero_()
            for direction in self.lstms:
                for lstm in direction:
                    lstm.bias_ih_l0.zero_()
                    lstm.bias_hh_l0.zero_()
                    lstm.bias_ih_l0[C:2 * C] = 1.0   # forget bias 1.0 (gates i, f, g, o)

    def zero_state(self, batch_size):
        P, C = self.a.projection_dim, self.a.cell_size
        return [[(torch.zeros(1, batch_size, P), torch.zeros(1, batch_size, C))
                 for _ in range(self.a.layers)] for _ in range(self.directions)]

    def forward(self, inputs, state):
        """inputs: [D, T, B] ids; state[d][l] = (h [1,B,P], c [1,B,C]).
        Returns top outputs [D, T, B, P] and the new (detached) state."""
        a = self.a
        D, T, B = inputs.shape
        x_all = self.embedding(inputs)                                   # [D, T, B, P]
        tops, new_state = [], []
        for d in range(D):
            x = x_all[d]                                                 # [T, B, P]
            layer_states = []
            for l, lstm in enumerate(self.lstms[d]):
                x_in = F.dropout(x, a.dropout, self.training) if a.dropout > 0 else x
                y, (h, c) = lstm(x_in, state[d][l])                      # y [T, B, P]
                layer_states.append((h.detach(), c.detach()))
                x = y + x_in if (l > 0 and a.skip_connections) else y
            if a.dropout > 0:
                x = F.dropout(x, a.dropout, self.training)
            tops.append(x)
            new_state.append(layer_states)
        return torch.stack(tops), new_state


def sampled_softmax_loss(model, sampler, h, targets):
    """h [D, N, P], targets [D, N] -> 0.5 (mean_fwd + mean_bwd) NLL (mean over all D*N rows).
    The sampler returns its ids as a numpy array (this CPU reference) or a tensor on h's device
    (torch_elmo.py); logits are compared in f32 whatever autocast computed them in."""
    D, N, P = h.shape
    sampled, tries = sampler.sample()
    if not torch.is_tensor(sampled):
        sampled = torch.from_numpy(sampled)                              # [S]
    flat_targets = targets.reshape(-1)                                   # [D*N]
    ids = torch.cat([flat_targets, sampled])                             # [D*N + S]
    w = model.softmax_w(ids)                                             # [D*N + S, P]
    b = model.softmax_b(ids).squeeze(1)                                  # [D*N + S]
    with torch.no_grad():
        log_q = sampler.log_expected_count(ids, tries)                  # [D*N + S]
    hf = h.reshape(D * N, P)                                             # [D*N, P]
    w_true, w_s = w[:D * N], w[D * N:]
    true_logit = (hf * w_true).sum(1) + b[:D * N] - log_q[:D * N]        # [D*N]
    samp_logit = hf @ w_s.t() + (b[D * N:] - log_q[D * N:])              # [D*N, S]
    hit = flat_targets.unsqueeze(1) == sampled.unsqueeze(0)              # [D*N, S]
    samp_logit = samp_logit.float().masked_fill(hit, -1e30)
    logits = torch.cat([true_logit.float().unsqueeze(1), samp_logit], 1)  # [D*N, 1+S]
    return (torch.logsumexp(logits, 1) - logits[:, 0]).mean()


def full_softmax_loss(model, h, targets):
    D, N, P = h.shape
    logits = model.softmax(h.reshape(D * N, P))                          # [D*N, V]
    return F.cross_entropy(logits, targets.reshape(-1))


def clip_global_norm_(params, max_norm):
    """TF clip_by_global_norm over dense and (coalesced) sparse grads; returns the norm."""
    sq = torch.zeros((), dtype=torch.float64)
    for p in params:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            g = g.coalesce()
            p.grad = g
            sq += g._values().double().pow(2).sum()
        else:
            sq += g.double().pow(2).sum()
    norm = math.sqrt(sq.item())
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / norm
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
    return norm


# ----------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------

def main(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_start = time.perf_counter()

    words = load_vocab(a.vocab) if a.vocab else build_vocab(a.corpus)
    word_to_id = {}
    for i, w in enumerate(words):
        word_to_id.setdefault(w, i)
    V = len(words)
    sentences = load_sentences(a.corpus, word_to_id)
    n_tokens = sum(len(s) - 1 for s in sentences)
    batchers = [PackedBatcher(sentences, a.batch_size, a.unroll_steps)]
    if a.bidirectional:
        batchers.append(PackedBatcher([s[::-1].copy() for s in sentences],
                                      a.batch_size, a.unroll_steps))

    model = BiLM(a, V)
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.Adagrad(params, lr=a.learning_rate,
                                    initial_accumulator_value=a.initial_accumulator,
                                    eps=a.epsilon)
    sampler = (LogUniformSampler(V, a.samples, a.seed) if a.softmax == "sampled" else None)
    state = model.zero_state(a.batch_size)
    print(f"torch_elmo_cpu: torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"V={V} E=P={a.projection_dim} C={a.cell_size} L={a.layers} B={a.batch_size} "
          f"T={a.unroll_steps} S={a.samples if sampler else 'full'} dirs={len(batchers)}; "
          f"corpus {len(sentences)} sentences, {n_tokens} tokens; "
          f"setup {time.perf_counter() - t_start:.1f}s", flush=True)

    step_seconds, losses = [], []
    for step in range(1, a.steps + 1):
        t0 = time.perf_counter()
        batches = [b.next_batch() for b in batchers]
        inputs = torch.from_numpy(np.stack([x for x, _ in batches]))       # [D, T, B]
        targets = torch.from_numpy(np.stack([y for _, y in batches]))      # [D, T, B]
        h, state = model(inputs, state)                                    # [D, T, B, P]
        D, T, B, P = h.shape
        h = h.reshape(D, T * B, P)
        tg = targets.reshape(D, T * B)
        loss = (sampled_softmax_loss(model, sampler, h, tg) if sampler
                else full_softmax_loss(model, h, tg))
        optimizer.zero_grad(set_to_none=True)
        (loss * a.unroll_steps).backward()
        grad_norm = clip_global_norm_(params, a.clip_norm)
        optimizer.step()
        loss_value = loss.item()
        step_seconds.append(time.perf_counter() - t0)
        losses.append(loss_value)
        if not math.isfinite(loss_value):
            raise SystemExit(f"torch_elmo_cpu: loss is {loss_value} at step {step}")
        if step % a.log_every == 0 or step == a.steps:
            window = losses[-a.log_every:]
            print(f"step {step:6d}  loss {sum(window) / len(window):8.4f}  "
                  f"grad_norm {grad_norm:8.3f}  step_ms {1e3 * step_seconds[-1]:8.1f}",
                  flush=True)

    timed = step_seconds[a.warmup:]
    tokens_per_step = a.batch_size * a.unroll_steps
    tokens_per_s = len(timed) * tokens_per_step / sum(timed)
    result = {
        "program": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas_threads": int(os.environ["OPENBLAS_NUM_THREADS"]),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "steps": a.steps,
        "warmup_steps": a.warmup,
        "timed_steps": len(timed),
        "tokens": len(timed) * tokens_per_step,
        "train_seconds": sum(timed),
        "tokens_per_s": tokens_per_s,
        "median_step_ms": 1e3 * float(np.median(timed)),
        "first_loss": losses[0],
        "last_loss": sum(losses[-a.log_every:]) / len(losses[-a.log_every:]),
        "vocab_size": V,
        "sizes": {"embedding_dim": a.embedding_dim, "projection_dim": a.projection_dim,
                  "cell_size": a.cell_size, "layers": a.layers, "batch_size": a.batch_size,
                  "unroll_steps": a.unroll_steps, "samples": a.samples, "softmax": a.softmax,
                  "dropout": a.dropout, "bidirectional": bool(a.bidirectional)},
    }
    print(f"torch_elmo_cpu: {tokens_per_s:.0f} tokens/s over {len(timed)} steps "
          f"(median step {result['median_step_ms']:.1f} ms)")
    print(json.dumps(result), flush=True)
    if a.json_out:
        with open(a.json_out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main(ARGS)

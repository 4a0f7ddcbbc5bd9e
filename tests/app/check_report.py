#!/usr/bin/env python3
"""Checks `elmo_fast report` pages without a browser (Python standard library only).

Trains two tiny runs (different learning rates, validation every few steps), writes a large
synthetic metrics file (a resume, null values, a damaged line), then checks:
  - the report.html each training run left in its run.dir, the page of the two runs overlaid,
    and the page of the large file;
  - every <svg> is well-formed XML with finite axis ranges (data-x-min < data-x-max, ...);
  - every expected series is present, and those that must have data have points; polyline
    coordinates are finite and inside the SVG;
  - long series are downsampled (at most 1200 points drawn of 30000), not truncated (the last
    step is still on the axis);
  - the page is self-contained: no script, no stylesheet or font from elsewhere, no URL but the
    SVG namespace.
Exit code 0 when every check passes; the first failure is printed with the page it concerns.
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

SVG_NS = "{http://www.w3.org/2000/svg}"
TRAINING = ["Training loss", "Throughput", "Learning rate", "Gradient norm"]
VALIDATION = ["Validation perplexity", "Validation perplexity by slice"]
SLICES = ["all", "head", "torso", "tail", "<UNK>", "</S> <S>"]


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def tiny_config(run_dir, lr):
    return f"""[run]
dir = "{run_dir}"
seed = 5
[synthetic]
vocab_size = 150
classes = 4
train_sentences = 2000
valid_sentences = 60
[model]
embedding_dim = 16
cell_size = 32
projection_dim = 16
layers = 2
[softmax]
type = "sampled"
samples = 40
[train]
batch_size = 8
unroll_steps = 10
max_steps = 24
threads = 2
log_every = 2
eval_every = 8
device = "cpu"
[optimizer]
learning_rate = {lr}
[checkpoint]
every_steps = 8
keep_last = 1
[eval]
batch_size = 4
max_tokens = 400
[metrics]
tensorboard = false
"""


def run(cmd, expect=0):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != expect:
        fail(f"{' '.join(cmd)} exited {proc.returncode}, expected {expect}:\n{proc.stdout}")
    return proc.stdout


def svgs_of(path):
    html = open(path, encoding="utf-8").read()
    if "<script" in html.lower():
        fail(f"{path}: has a script")
    for bad in ("@import", "url(", "<link", "@font-face"):
        if bad in html:
            fail(f"{path}: loads something from elsewhere ({bad})")
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    if urls - {"http://www.w3.org/2000/svg"}:
        fail(f"{path}: names URLs {sorted(urls)}")
    blocks = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    figures = {}
    for block in blocks:
        try:
            svg = ET.fromstring(block)
        except ET.ParseError as e:
            fail(f"{path}: an SVG is not well-formed XML ({e}):\n{block[:300]}")
        title = next(t for t in svg.iter(SVG_NS + "text") if t.get("font-weight") == "bold").text
        check_svg(path, title, svg)
        figures[title] = svg
    return html, figures


def check_svg(path, title, svg):
    where = f"{path}: '{title}'"
    ranges = {}
    for axis in ("x", "y"):
        lo, hi = float(svg.get(f"data-{axis}-min")), float(svg.get(f"data-{axis}-max"))
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            fail(f"{where}: {axis} axis range [{lo}, {hi}] is not finite and increasing")
        ranges[axis] = (lo, hi)
    width, height = float(svg.get("width")), float(svg.get("height"))
    for line in svg.iter(SVG_NS + "polyline"):
        for pair in line.get("points").split():
            x, y = (float(v) for v in pair.split(","))
            if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
                fail(f"{where}: point {pair} outside the {width}x{height} SVG")


def series_of(svg):
    return {g.get("data-series"): int(g.get("data-points"))
            for g in svg.iter(SVG_NS + "g") if g.get("class") == "series"}


def expect_series(path, figures, title, labels, with_points):
    if title not in figures:
        fail(f"{path}: no figure '{title}' (have {sorted(figures)})")
    found = series_of(figures[title])
    for label in labels:
        if label not in found:
            fail(f"{path}: '{title}' lacks series '{label}' (has {sorted(found)})")
        if label in with_points and found[label] == 0:
            fail(f"{path}: '{title}' series '{label}' has no points")
    return found


def check_run_page(path, names, slices_with_points):
    """A page of `names` (one run: unnamed series) with every figure against step and time."""
    html, figures = svgs_of(path)
    if len(figures) != 2 * (len(TRAINING) + len(VALIDATION)):
        fail(f"{path}: {len(figures)} plots, expected {2 * (len(TRAINING) + len(VALIDATION))}")
    keys = {"Training loss": "loss", "Throughput": "tokens_per_s", "Learning rate": "lr",
            "Gradient norm": "grad_norm", "Validation perplexity": "valid_ppl"}
    for base, key in keys.items():
        labels = names if len(names) > 1 else [key]
        for axis in ("step", "time"):
            expect_series(path, figures, f"{base} vs {axis}", labels, labels)
    for axis in ("step", "time"):
        labels = [f"{n} {s}" for n in names for s in SLICES] if len(names) > 1 else SLICES
        must = [f"{n} {s}" for n in names for s in slices_with_points] if len(names) > 1 \
            else slices_with_points
        expect_series(path, figures, f"Validation perplexity by slice vs {axis}", labels, must)
    if len(names) > 1:
        legend = [t.text for g in figures["Training loss vs step"].iter(SVG_NS + "g")
                  if g.get("class") == "legend" for t in g.iter(SVG_NS + "text")]
        if legend != names:
            fail(f"{path}: legend {legend}, expected {names}")
    return html, figures


def write_large_run(run_dir):
    """30000 log lines with a resume at step 200000 (steps 200010..210000 logged twice), null
    values, one damaged line, validation lines with slices."""
    os.makedirs(run_dir, exist_ok=True)
    lines = []

    def line(step, t, wall, **values):
        lines.append(json.dumps({"step": step, "time": t, **values, "wall_time": wall}))

    def train(step, t, start):
        loss = 6.0 * math.exp(-step / 80000.0) + 3.0 + 0.05 * math.sin(step / 300.0)
        line(step, t, start + t, loss=loss, tokens_per_s=14000 + 500 * math.sin(step / 7000.0),
             lr=0.6, grad_norm=None if step % 50000 == 0 else 2.0 + step % 7, ppl=math.exp(loss))

    def valid(step, t, start):
        line(step, t, start + t, valid_ppl=50 + 1e6 / (step + 1e4), valid_ppl_head=20.0,
             valid_ppl_torso=90.0, valid_ppl_tail=900.0, valid_ppl_unk=None, valid_ppl_eos=5.0,
             valid_share_head=0.5, valid_share_torso=0.3, valid_share_tail=0.14,
             valid_share_unk=0.0, valid_share_eos=0.06)

    for step in range(10, 210001, 10):
        train(step, step * 0.01, 1.7e9)
        if step % 20000 == 0:
            valid(step, step * 0.01 + 0.05, 1.7e9)
    lines.append('{"step": 210010, "lo')  # torn by a crash
    for step in range(200010, 300001, 10):
        train(step, (step - 200000) * 0.01, 1.8e9)
        if step % 20000 == 0:
            valid(step, (step - 200000) * 0.01 + 0.05, 1.8e9)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)

    runs = []
    for name, lr in (("lr-0.2", 0.2), ("lr-0.6", 0.6)):
        run_dir = os.path.join(args.workdir, name)
        config = os.path.join(args.workdir, name + ".toml")
        with open(config, "w") as f:
            f.write(tiny_config(run_dir, lr))
        out = run([args.binary, "--config", config])
        if f"report: {run_dir}/report.html" not in out:
            fail(f"training did not print its report's path:\n{out}")
        runs.append(run_dir)
    # The synthetic language has no unknown words: the <UNK> slice is empty.
    with_points = ["all", "head", "torso", "tail", "</S> <S>"]
    for run_dir in runs:
        html, _ = check_run_page(os.path.join(run_dir, "report.html"), [], with_points)
        if "finished: 24 steps" not in html:
            fail(f"{run_dir}/report.html does not show the finished run")

    both = os.path.join(args.workdir, "two.html")
    run([args.binary, "report", runs[0], runs[1], "--out", both])
    html, _ = check_run_page(both, ["lr-0.2", "lr-0.6"], with_points)
    if "optimizer.learning_rate" not in html or 'class="diff"' not in html:
        fail(f"{both}: the configuration differences are not shown")

    large = os.path.join(args.workdir, "large")
    count = write_large_run(large)
    page = os.path.join(args.workdir, "large.html")
    out = run([args.binary, "report", large, "--out", page])
    if f"metrics.jsonl:{21000 + 10 + 1}: damaged line skipped" not in out:
        fail(f"the damaged line was not named:\n{out}")
    html, figures = check_run_page(page, [], ["all", "head", "torso", "tail", "</S> <S>"])
    drawn = series_of(figures["Training loss vs step"])["loss"]
    if not 100 < drawn <= 1200:
        fail(f"{page}: {drawn} loss points drawn of {count}: not downsampled")
    if float(figures["Training loss vs step"].get("data-x-max")) < 300000:
        fail(f"{page}: the x axis stops before the last step: truncated")
    for note in ("damaged line skipped", "replaced by the resumed process", "resumed 1 time",
                 "null value(s)"):
        if note not in html:
            fail(f"{page}: no note '{note}'")
    print(f"OK: 5 pages checked ({count} metric lines in the large run, {drawn} drawn)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The GPU check: build elmo_fast on a bare GPU machine and run every GPU check in one call,
within a 530 s budget (under nine minutes on an H100 with 16 cores, summary included). Every log
and JSON goes into one folder with a one-page summary (summary.txt; summary.json); the exit code
is 0 only if every stage passed.

On the GPU machine (the CUDA toolkit, CMake, a C++ compiler and a python3 with torch; no package
registry), from the repository root, after `python3 tools/device_deps.py fetch` here:
    python3 bench/gpu_check.py [--out DIR] [--export DIR]
Here, without a GPU:
    python3 bench/gpu_check.py --dry-run      # the plumbing only: every command a recorded no-op
    python3 bench/gpu_check.py --cpu          # real commands; GPU-only stages skip, tiny CPU runs

Stages, in order (--stages / --skip select them; each is stopped at its limit, --limit S=SEC):
  probe        the GPU, driver, nvcc, cmake and torch versions (nvidia-smi; torch without it)
  deps         unpacks .devdeps/debs (tools/device_deps.py) under <build>/deps, links the
               libraries the machine lacks, finds cuBLAS / cuDNN / NCCL (toolkit, system or the
               PyTorch wheels) and compute-sanitizer
  configure    cmake (Ninja when available) with what deps found
  build        elmo_fast, every gpu-labelled test binary and the GPU benchmarks, all cores,
               keep going past a failing target; then ldd finds every library they need
  ctest        ctest -L gpu (the benchmark smoke tests included), JUnit XML
  memcheck     compute-sanitizer --tool memcheck on the kernel tests (test_kernels_gpu)
  racecheck    compute-sanitizer --tool racecheck on the same
  bench-lstmp  bench_lstmp, every shape and precision, ours vs cuDNN
  bench-lstmp-persistent  bench_lstmp --kernel persistent --shapes elmo
  bench-softmax           bench_sampled_softmax
  bench-adagrad           bench_adagrad
  train        configs/elmo-1b.toml for --train-steps steps on the 1B-word sample shards
               (--data) with an elmo-1b-sized vocabulary: peak device memory, tokens/s
  e2e          bench/bench_train_gpu.py: elmo-1b sizes vs PyTorch in fp32, tf32 and bf16
With a GPU every stage runs with ELMO_REQUIRE_GPU=1 (a GPU test that finds no GPU fails).

Time budget. The device tool allows 10 minutes a command, and the check must end within nine.
The stages share --budget seconds (default 530): each runs for at most its own limit and at most
what is left of the budget less 10 s for the summary; a stage that would get under 5 s is not
started and counts as a failure ("not run: budget spent"). The order puts what decides most
first. Each limit is 2-3x the stage's expected time; the expected times (about 6 minutes in
all) came from:
  build (limit 150 s, expected ~60 s): measured on the development machine, every compiler
    process timed (user + system CPU seconds): the 113 compilations of this stage's targets
    (elmo_fast, the gpu test binaries, the GPU benchmarks) take 569 CPU-seconds, the longest
    one 21 s (app/cli.cpp, kernels/lstmp_persistent.cu); the links took at most 3.3 s each.
    On 16 cores: 569 / 16 = 36 s of compiling, bounded below by the longest file, plus the
    links. Configure (limit 45 s): 12 s measured there.
  ctest (100 s, ~50 s): 71 gpu tests, 8 processes at a time, each a CUDA context (~0.5 s) and
    problems of at most ~0.3 TFLOP (the LSTM layer at B 128, T 20, C 4096) beside CPU twins.
  memcheck, racecheck (50 s each, ~25 s): test_kernels_gpu alone (27 tests, small shapes); the
    sanitizers slow the kernels 10-100x, not the host references.
  benches (40 + 20 + 25 + 20 s, ~40 s in all): 3 warm-ups + 20 timed repetitions per case;
    bench_lstmp's largest case (elmo, B 256, fp32) is ~0.6 TFLOP a repetition.
  train (60 s, ~30 s): 30 steps of 2,560 tokens at 503 MFLOP/token (1.3 TFLOP a step), a
    validation pass over one shard and the ~7 GB final checkpoint.
  e2e (150 s, ~90 s): 3 precisions x (elmo_fast, PyTorch) x 20 such steps, plus each program's
    start-up (the 793,471-word vocabulary, torch's import) and elmo_fast's final checkpoint.
  probe, deps (20 + 30 s): a few seconds each; unpacking the 64 .debs took 6-8 s here.
The GPU figures are estimates until the first run on a GPU. The limits add up to more than the
budget on purpose: a fast stage leaves its time to the next, and what the budget cuts is named
in the summary; rerun it with --stages on the same warm machine (the build folder stays, so the
build is then a no-op).

Exit codes: 0 every selected stage passed (or skipped in --cpu mode), 1 a stage failed, timed
out or was not run, 2 bad usage.
"""

import dataclasses
import datetime
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

from gpu_check_args import (  # bench/gpu_check_args.py (STAGE_NAMES: for the tests)
    REPO, STAGE_NAMES, SUMMARY_RESERVE, MIN_STAGE_SECONDS, parse_args, device_deps,
)
from gpu_check_tools import (  # bench/gpu_check_tools.py
    UsageError, Result, run_command, kill_group, read_json, junit_counts, gtest_counts,
    ctest_commands, test_targets, TORCH_PROBE, probe_facts, ctest_verdict, sanitizer_errors,
    bench_key, e2e_key, train_key, pad_vocab, shorten, RUNNING,
)

ELMO_1B_VOCAB = 793471   # the 1B Word Benchmark's vocabulary size (REFERENCE.md)
GPU_BENCHES = ("bench_lstmp", "bench_sampled_softmax", "bench_adagrad")
# --cpu: the train stage's model, small enough for 2 CPU cores (same keys as bench_train_gpu's
# --quick).
CPU_TRAIN_OVERRIDES = [
    "model.embedding_dim=16", "model.projection_dim=16", "model.cell_size=32",
    "softmax.samples=64", "train.batch_size=4", "train.unroll_steps=5", "train.device=cpu",
    "train.threads=2", "eval.batch_size=4", "eval.unroll_steps=5", "eval.max_tokens=200",
]


class Check:
    def __init__(self, a):
        self.a = a
        self.results = {}
        self.start_wall = datetime.datetime.now(datetime.timezone.utc)
        self.start = time.monotonic()
        self.deadline = self.start + a.budget
        self.env = dict(os.environ)
        if a.cpu:
            self.env.pop("ELMO_REQUIRE_GPU", None)  # no GPU here: the gpu tests are to skip
        else:
            self.env["ELMO_REQUIRE_GPU"] = "1"
        if a.data:
            self.env["ELMO_DATA_DIR"] = a.data
        self.env["PYTHONUNBUFFERED"] = "1"
        self.gpu_libs = None
        self.facts = {}      # device name, driver, versions: the summary's header
        self.build_bin = os.path.join(a.build_dir, "elmo_fast")
        os.makedirs(a.out, exist_ok=True)
        os.makedirs(a.work_dir, exist_ok=True)

    # -- plumbing ------------------------------------------------------------------------------

    def path(self, *parts):
        return os.path.join(self.a.out, *parts)

    def run(self, result, argv, log_name=None, limit=None, env=None, cwd=None, append=False):
        """Runs one command of a stage (in --dry-run: records it and runs a no-op instead)."""
        log_name = log_name or f"{result.stage}.log"
        result.log = log_name
        limit = result.limit if limit is None else limit
        if self.a.dry_run:
            if not result.key:
                result.key = "would run: " + shorten(argv)
            with open(self.path(log_name), "a" if append else "w", encoding="utf-8") as log:
                log.write(f"dry run: would run (limit {limit:.0f} s): {shlex.join(argv)}\n")
            simulated = self.a.simulate.get(result.stage)
            noop = {"fail": ["false"], "timeout": ["sleep", "3600"]}.get(simulated, ["true"])
            return run_command(noop, self.path(log_name), limit, append=True)
        return run_command(argv, self.path(log_name), limit, env=env or self.env,
                           cwd=cwd or REPO, append=append)

    def log_line(self, result, text):
        with open(self.path(result.log or f"{result.stage}.log"), "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")

    def ran_status(self, result, ran, what):
        """ok / FAIL / TIMEOUT from one command's outcome; False when it did not pass."""
        if ran.timed_out:
            result.status = "TIMEOUT"
            result.note = f"{what} stopped at the {result.limit:.0f} s limit"
            return False
        if ran.rc != 0:
            result.status, result.note = "FAIL", f"{what} exited with {ran.rc}"
            return False
        result.status = "dry" if self.a.dry_run else "ok"
        return True

    def left(self, result):
        """Seconds the running stage has left of its limit (at least 1)."""
        return max(1.0, result.limit - (time.monotonic() - self.stage_begin))

    def remaining(self):
        return self.deadline - time.monotonic() - SUMMARY_RESERVE

    def execute(self, stages):
        self.write_summary()  # marks the output folder as this script's from the start
        if "deps" not in stages and set(stages) - {"probe"}:
            try:
                self.prepare_environment()
            except device_deps.DepsError as e:
                print(f"gpu_check: the environment is incomplete: {e}", file=sys.stderr)
        for name in stages:
            result = Result(name, limit=self.a.limits[name])
            self.results[name] = result
            left = self.remaining()
            if left < MIN_STAGE_SECONDS:
                result.status, result.note = "not run", "budget spent"
                print(self.summary_line(result), flush=True)
                continue
            result.limit = min(result.limit, left)
            begin = self.stage_begin = time.monotonic()
            try:
                getattr(self, "stage_" + name.replace("-", "_"))(result)
            except Exception as e:  # a bug or an unexpected file: the stage fails, the rest run
                result.status, result.note = "FAIL", f"gpu_check error: {type(e).__name__}: {e}"
            result.seconds = time.monotonic() - begin
            if result.status == "not run":
                result.status, result.note = "FAIL", "gpu_check error: the stage set no status"
            self.write_summary()
            print(self.summary_line(result), flush=True)

    def cpu_skip(self, result, why):
        """--cpu: a GPU-only stage that has nothing to do without a GPU."""
        result.status, result.note = "skip", f"no GPU (--cpu): {why}"

    # -- stages --------------------------------------------------------------------------------

    def stage_probe(self, result):
        smi = shutil.which("nvidia-smi") or next(
            (p for p in ("/usr/local/nvidia/bin/nvidia-smi", "/usr/bin/nvidia-smi")
             if os.path.exists(p)), "nvidia-smi")
        commands = [
            [smi, "--query-gpu=name,driver_version,memory.total,compute_cap",
             "--format=csv,noheader"],
            [smi],
            ["nvcc", "--version"] if shutil.which("nvcc") else
            ["/usr/local/cuda/bin/nvcc", "--version"],
            ["cmake", "--version"],
            [self.a.python, "-c", TORCH_PROBE],
        ]
        for i, argv in enumerate(commands):
            ran = self.run(result, argv, append=i > 0, limit=self.left(result))
            if ran.timed_out:
                result.status, result.note = "TIMEOUT", f"{argv[0]} hung (probe.log)"
                return
            if self.a.dry_run and not self.ran_status(result, ran, argv[0]):
                return
        if self.a.dry_run:
            return
        self.facts.update(probe_facts(self.read_log(result)))
        f = self.facts
        result.key = (f"{f['gpu']}, driver {f.get('driver', '?')}, {f.get('gpu_memory', '?')}"
                      if "gpu" in f else "no GPU")
        result.key += f"; torch {f['torch']} (GPU: {f['torch_gpu']})" if "torch" in f else \
            "; no torch"
        if "gpu" in f or self.a.cpu:
            result.status = "ok"
        else:
            result.status = "FAIL"
            result.note = "neither nvidia-smi nor torch sees a GPU (probe.log)"

    def read_log(self, result, name=None):
        try:
            with open(self.path(name or result.log), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stage_deps(self, result):
        result.log = "deps.log"
        debs, found = self.prepare_environment()
        result.key = (f"{debs} .debs; CUDA {self.facts['cuda']}, cuBLAS "
                      f"{self.facts['cublas']}, cuDNN {self.facts['cudnn']}, NCCL "
                      f"{self.facts['nccl']}; compute-sanitizer "
                      f"{'found' if found['compute_sanitizer'] else 'NOT FOUND'}")
        missing = [n for n, ok in (("nvcc", found["nvcc"]), ("cuBLAS", found["cublas"]["found"]),
                                   ("NCCL", found["nccl"]["found"])) if not ok]
        if self.a.dry_run:
            result.status = "dry"
        elif missing:
            result.status, result.note = "FAIL", f"{', '.join(missing)} not found (deps.log)"
        else:
            result.status = "ok"

    def prepare_environment(self):
        """The deps stage's work, also done (without a summary row) when --stages leaves the
        stage out, since every later stage needs its environment: unpack .devdeps (a no-op
        when already unpacked), find the GPU libraries, write deps.log and gpu_libs.json.
        Returns (.deb count, what find_gpu_libs found)."""
        a = self.a
        lines = []
        debs = glob.glob(os.path.join(a.deps, "debs", "*.deb"))
        if debs and a.dry_run:
            lines.append(f"dry run: would unpack {len(debs)} .debs from {a.deps} under "
                         f"{a.deps_prefix}")
        elif debs:
            info = device_deps.unpack(a.deps, a.deps_prefix, environ=self.env)
            self.env.update(info["env"])
            lines.append(f"unpacked {info['debs']} .debs under {info['prefix']}; linked the "
                         f"{len(info['overlay'])} libraries this machine lacks: "
                         + " ".join(info["overlay"]))
            lines += [f"export {k}='{v}'" for k, v in info["env"].items()]
        else:
            lines.append(f"no .debs in {a.deps}/debs: building against this machine's own "
                         "libraries (run `python3 tools/device_deps.py fetch` where apt works "
                         "to bring them)")
        sites = a.site + device_deps.python_site_dirs(a.python)
        found = device_deps.find_gpu_libs(environ=self.env, site_dirs=sites)
        self.gpu_libs = found
        if found["cpath"]:
            self.env["CPATH"] = os.pathsep.join(found["cpath"] + [self.env.get("CPATH", "")])
        if found["toolkit_root"]:
            self.env["PATH"] = os.path.join(found["toolkit_root"], "bin") + os.pathsep + \
                self.env.get("PATH", "")
        lines += device_deps.describe_gpu_libs(found) + [f"note: {n}" for n in found["notes"]]
        lines.append("cmake arguments: " + " ".join(found["cmake_args"]))
        with open(self.path("deps.log"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.path("gpu_libs.json"), "w", encoding="utf-8") as f:
            json.dump(found, f, indent=2)
        for name in ("cublas", "cudnn", "nccl"):
            r = found[name]
            self.facts[name] = (f"{r.get('version') or '?'} ({r['where'].split(' ')[0]})"
                                if r["found"] else "not found")
        self.facts["cuda"] = found.get("cuda_version") or "?"
        return len(debs), found

    def stage_configure(self, result):
        a = self.a
        argv = ["cmake", "-S", REPO, "-B", a.build_dir, "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_CUDA_ARCHITECTURES={a.cuda_arch}", f"-DELMO_BENCH_PYTHON={a.python}"]
        if shutil.which("ninja") and not os.path.exists(
                os.path.join(a.build_dir, "Makefile")):
            argv += ["-G", "Ninja"]
        if a.data:
            argv.append(f"-DELMO_DATA_DIR={a.data}")
        if not a.cpu:
            # The CUDA-optional build's switch: ON makes a toolkit CMake cannot use an error
            # here, not a quiet CPU-only build without the gpu tests.
            argv.append("-DELMO_CUDA=ON")
        if shutil.which("ccache"):
            argv += [f"-DCMAKE_{lang}_COMPILER_LAUNCHER=ccache" for lang in ("C", "CXX", "CUDA")]
        argv += (self.gpu_libs or {}).get("cmake_args", []) + a.cmake_arg
        ran = self.run(result, argv)
        if self.ran_status(result, ran, "cmake") and self.a.dry_run:
            return
        text = self.read_log(result)
        m = re.search(r"The CUDA compiler identification is (.*)", text)
        parts = [f"nvcc: {m.group(1)}"] if m else []
        if "cuDNN: " in text:
            parts.append("bench_lstmp: built (cuDNN found)")
        elif "cuDNN not found" in text:
            parts.append("bench_lstmp: NOT built (no cuDNN)")
        result.key = "; ".join(parts)

    def gpu_tests(self):
        """{name: command} of the gpu-labelled tests but the build fixture (ctest's list; the
        commands from the CTestTestfile.cmake files, since ctest shows none for a binary not
        built yet); None when the build folder is not configured."""
        proc = subprocess.run(["ctest", "--test-dir", self.a.build_dir, "-N", "-L", "gpu",
                               "--show-only=json-v1"], capture_output=True, text=True,
                              env=self.env)
        try:
            names = [t["name"] for t in json.loads(proc.stdout)["tests"]]
        except (ValueError, KeyError):
            return None
        commands = ctest_commands(self.a.build_dir)
        return {n: commands.get(n, []) for n in names if n != "build_test_binaries"}

    def gpu_targets(self):
        """elmo_fast and the binaries the gpu-labelled tests run (test binaries and the GPU
        benchmarks of the smoke tests); None when ctest cannot say."""
        tests = self.gpu_tests()
        if tests is None:
            return None
        return ["elmo_fast"] + test_targets(tests.values())

    def stage_build(self, result):
        a = self.a
        targets = None if a.dry_run else self.gpu_targets()
        if a.dry_run:
            targets = ["elmo_fast", "<the gpu tests' binaries>"] + list(GPU_BENCHES)
        elif targets is None:
            targets = ["elmo_fast", "elmo_tests"]
        argv = ["cmake", "--build", a.build_dir, "--parallel", str(a.jobs), "--target"] + targets
        ninja = os.path.exists(os.path.join(a.build_dir, "build.ninja"))
        argv += ["--", "-k", "0"] if ninja else ["--", "-k"]
        ran = self.run(result, argv)
        self.ran_status(result, ran, "the build")
        if a.dry_run:
            result.key = "targets: " + " ".join(targets)
            return
        binaries = [b for b in (self.binary(t) for t in targets) if b]
        missing = [t for t in targets if not self.binary(t)]
        unresolved = {}
        for b in binaries:
            proc = subprocess.run(["ldd", b], capture_output=True, text=True, env=self.env)
            gone = re.findall(r"^\s*(\S+) => not found", proc.stdout, re.M)
            if gone:
                unresolved[os.path.basename(b)] = sorted(set(gone))
        for name, libs in unresolved.items():
            self.log_line(result, f"ldd {name}: not found: {' '.join(libs)}")
        result.key = f"{len(binaries)} of {len(targets)} targets built in {ran.seconds:.0f} s"
        if missing:
            result.key += "; missing: " + " ".join(missing)
        if unresolved:
            result.status = "FAIL"
            result.note = "libraries not found at run time: " + "; ".join(
                f"{n}: {' '.join(l)}" for n, l in unresolved.items())

    def binary(self, target):
        for rel in (target, os.path.join("tests", target), os.path.join("bench", target)):
            p = os.path.join(self.a.build_dir, rel)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
        return None

    def stage_ctest(self, result):
        a = self.a
        junit = self.path("ctest_gpu.xml")
        stop = time.time() + max(1.0, result.limit - 15)
        argv = ["ctest", "--test-dir", a.build_dir, "-L", "gpu", "-E", "^build_test_binaries$",
                "-FS", "elmo_test_binaries", "--output-on-failure", "--no-tests=error",
                "-j", str(a.ctest_jobs), "--output-junit", junit,
                "--stop-time", time.strftime("%H:%M:%S", time.localtime(stop))]
        ran = self.run(result, argv)
        if a.dry_run:
            self.ran_status(result, ran, "ctest")
            return
        counts = junit_counts(junit)
        if counts is None:
            self.ran_status(result, ran, "ctest")
            if result.status == "ok":
                result.status, result.note = "FAIL", "ctest wrote no JUnit results"
            return
        listed = self.gpu_tests()
        result.status, result.key, result.note = ctest_verdict(
            counts, len(listed) if listed is not None else 0, ran.rc, ran.timed_out, a.cpu)

    def sanitize(self, result, tool):
        a = self.a
        cs = (self.gpu_libs or {}).get("compute_sanitizer")
        if a.cpu and not a.dry_run:
            return self.cpu_skip(result, "compute-sanitizer needs one")
        if not cs and not a.dry_run:
            result.status, result.note = "FAIL", "compute-sanitizer not found (deps.log)"
            return
        fails = []
        for i, name in enumerate(a.sanitize):
            binary = self.binary(name) or os.path.join(a.build_dir, "tests", name)
            argv = [cs or "compute-sanitizer", "--tool", tool, "--error-exitcode", "86",
                    "--print-limit", "100"]
            if tool == "racecheck":
                argv += ["--racecheck-report", "all"]
            argv += [binary, "--gtest_color=no"]
            if a.sanitize_filter:
                argv.append(f"--gtest_filter={a.sanitize_filter}")
            ran = self.run(result, argv, append=i > 0, limit=self.left(result))
            if not self.ran_status(result, ran, f"{tool} {name}"):
                fails.append(result.note)
        text = self.read_log(result)
        if a.dry_run:
            return
        found = sanitizer_errors(text)
        passed, failed, skipped = gtest_counts(text)
        result.key = (f"{'?' if found is None else found} errors; tests: {passed or 0} passed, "
                      f"{failed or 0} failed, {skipped or 0} skipped")
        if fails:
            result.status = "TIMEOUT" if any("limit" in f for f in fails) else "FAIL"
            result.note = "; ".join(fails)

    def stage_memcheck(self, result):
        self.sanitize(result, "memcheck")

    def stage_racecheck(self, result):
        self.sanitize(result, "racecheck")

    def bench(self, result, name, extra, json_name):
        a = self.a
        binary = self.binary(name)
        if not binary and not a.dry_run:
            no_cudnn = "cuDNN not found" in self.read_log(result, "configure.log")
            why = ("not built: CMake found no cuDNN (configure.log)" if no_cudnn else
                   "not built (build.log)")
            result.status, result.note = "FAIL", f"{name} {why}"
            return
        out_json = self.path(json_name)
        argv = [binary or os.path.join(a.build_dir, "bench", name), "--json", out_json] + extra
        if a.quick_benches:
            argv.append("--quick")
        ran = self.run(result, argv)
        if a.dry_run:
            self.ran_status(result, ran, name)
            return
        if ran.rc == 77 and not ran.timed_out:
            if a.cpu:
                return self.cpu_skip(result, f"{name} exited 77 (no CUDA device), as it should")
            result.status, result.note = "FAIL", f"{name}: no CUDA device visible (exit 77)"
            return
        self.ran_status(result, ran, name)
        if ran.rc == 1:
            result.note = f"{name}: an output is off beyond its tolerance (exit 1)"
        result.key = bench_key(name, read_json(out_json))

    def stage_bench_lstmp(self, result):
        self.bench(result, "bench_lstmp", [], "bench_lstmp.json")

    def stage_bench_lstmp_persistent(self, result):
        self.bench(result, "bench_lstmp", ["--kernel", "persistent", "--shapes", "elmo"],
                   "bench_lstmp_persistent.json")

    def stage_bench_softmax(self, result):
        self.bench(result, "bench_sampled_softmax", [], "bench_sampled_softmax.json")

    def stage_bench_adagrad(self, result):
        self.bench(result, "bench_adagrad", [], "bench_adagrad.json")

    def need_elmo_fast(self, result):
        """False (and the stage failed) when the build left no elmo_fast."""
        if self.a.dry_run or os.access(self.build_bin, os.X_OK):
            return True
        result.status, result.note = "FAIL", f"no {self.build_bin}: the build failed (build.log)"
        return False

    def stage_e2e(self, result):
        a = self.a
        if not self.need_elmo_fast(result):
            return
        work = os.path.join(a.work_dir, "e2e")
        out_json = self.path("train_gpu.json")
        argv = [a.python, os.path.join(REPO, "bench", "bench_train_gpu.py"),
                "--binary", self.build_bin, "--json", out_json, "--run-dir", work,
                "--python", a.python, "--timeout", str(int(result.limit))]
        if a.cpu:
            argv += ["--device", "cpu", "--quick", "--skip-without-torch"]
        else:
            argv += ["--steps", str(a.e2e_steps), "--warmup", str(a.e2e_warmup)]
        shutil.rmtree(work, ignore_errors=True)
        ran = self.run(result, argv)
        # The per-program logs and the reference's JSON: into the output folder.
        if os.path.isdir(work):
            os.makedirs(self.path("e2e"), exist_ok=True)
            for f in glob.glob(os.path.join(work, "*.log")) + \
                    glob.glob(os.path.join(work, "pytorch-*.json")):
                shutil.copy(f, self.path("e2e", os.path.basename(f)))
            if not a.keep_work:
                shutil.rmtree(work, ignore_errors=True)
        if a.dry_run:
            self.ran_status(result, ran, "bench_train_gpu.py")
            return
        if a.cpu and ran.rc == 77:
            result.status, result.note = "skip", f"{a.python} has no torch (e2e.log)"
            return
        self.ran_status(result, ran, "bench_train_gpu.py")
        result.key = e2e_key(read_json(out_json))

    def stage_train(self, result):
        a = self.a
        if not self.need_elmo_fast(result):
            return
        sample = os.path.join(a.data, "lm1b-sample") if a.data else None
        if not a.dry_run and not (sample and glob.glob(os.path.join(sample, "shard*"))):
            result.status = "FAIL"
            result.note = (f"no 1B-word sample shards under {sample or '(no --data)'}: run "
                           "`python3 tools/device_deps.py fetch` here or pass --data")
            return
        sample = sample or os.path.join("<data>", "lm1b-sample")
        work = os.path.join(a.work_dir, "train")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work, exist_ok=True)
        sample_vocab = os.path.join(work, "vocab-sample.txt")
        vocab = os.path.join(work, "vocab.txt")
        ran = self.run(result, [self.build_bin, "vocab", "--corpus",
                                os.path.join(sample, "shard*"), "--out", sample_vocab])
        if not self.ran_status(result, ran, "elmo_fast vocab"):
            return
        if a.dry_run:
            self.log_line(result, f"dry run: would pad {sample_vocab} to {ELMO_1B_VOCAB} words "
                          f"in {vocab}")
        else:
            fill = pad_vocab(sample_vocab, vocab, ELMO_1B_VOCAB)
            self.log_line(result, f"vocabulary: {ELMO_1B_VOCAB - fill} words of the sample + "
                          f"{fill} fillers = {ELMO_1B_VOCAB} (elmo-1b's size) in {vocab}")
        run_dir = os.path.join(work, "run")
        overrides = [f"run.dir={run_dir}", f"data.corpus={os.path.join(sample, 'shard[0-8]')}",
                     f"data.valid={os.path.join(sample, 'shard9')}", f"data.vocab={vocab}",
                     f"train.max_steps={a.train_steps}",
                     f"train.log_every={max(1, a.train_steps // 3)}", "train.eval_every=0",
                     "checkpoint.every_steps=0", "checkpoint.every_minutes=0",
                     "checkpoint.keep_last=1"]
        # With a GPU expected, say so: "auto" would quietly train elmo-1b on the CPU.
        overrides += CPU_TRAIN_OVERRIDES if a.cpu else ["train.device=cuda"]
        overrides += a.train_set
        argv = [self.build_bin, "--config", os.path.join(REPO, "configs", "elmo-1b.toml")]
        for o in overrides:
            argv += ["--set", o]
        ran = self.run(result, argv, append=True, limit=self.left(result))
        os.makedirs(self.path("train"), exist_ok=True)
        for name in ("summary.json", "metrics.jsonl", "config.toml"):
            p = os.path.join(run_dir, name)
            if os.path.isfile(p):
                shutil.copy(p, self.path("train", name))
        if not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)  # the final checkpoint is ~7 GB
        if not self.ran_status(result, ran, "elmo_fast train") or a.dry_run:
            return
        result.key = train_key(read_json(self.path("train", "summary.json")))

    # -- summary -------------------------------------------------------------------------------

    def summary_line(self, r):
        limit = f"{r.limit:.0f}s" if r.limit else "-"
        line = f"{r.stage:<23} {r.status:<8} {r.seconds:6.1f}s {limit:>5}  {r.key}"
        if r.note:
            line += f"\n{'':<46}-> {r.note}" + (f" ({r.log})" if r.log and not r.passed else "")
        return line

    def overall(self):
        failed = [r for r in self.results.values() if not r.passed]
        return failed

    def write_summary(self, final=False):
        a = self.a
        elapsed = time.monotonic() - self.start
        failed = self.overall()
        mode = "dry run" if a.dry_run else ("cpu (plumbing; not a GPU check)" if a.cpu else "gpu")
        verdict = ("PASSED" if not failed else
                   f"FAILED ({len(failed)} of {len(self.results)} stages)")
        if not final:
            verdict = "RUNNING; so far " + verdict
        f = self.facts
        gpu = (f"GPU: {f['gpu']}  driver {f.get('driver', '?')}  {f['gpu_memory']}  "
               f"compute capability {f['compute_capability']}" if "gpu" in f else
               "GPU: not probed" if a.dry_run or "probe" not in self.results else
               "GPU: none found (nvidia-smi)")
        lines = [
            f"elmo_fast GPU check  {self.start_wall.strftime('%Y-%m-%d %H:%M:%S UTC')}  "
            f"mode: {mode}  host: {platform.node()}",
            f"{verdict}  in {elapsed:.0f} s (budget {a.budget} s)",
            gpu,
            f"CUDA {f.get('cuda', '?')}  cuBLAS {f.get('cublas', '?')}  cuDNN "
            f"{f.get('cudnn', '?')}  NCCL {f.get('nccl', '?')}  torch {f.get('torch', '?')}",
            "",
            f"{'stage':<23} {'status':<8} {'time':>7} {'limit':>5}  key numbers",
        ]
        lines += [self.summary_line(r) for r in self.results.values()]
        lines += ["", f"Every log and JSON: {os.path.abspath(a.out)}"]
        text = "\n".join(lines) + "\n"
        with open(self.path("summary.txt"), "w", encoding="utf-8") as out:
            out.write(text)
        data = {"date": self.start_wall.isoformat(timespec="seconds"), "mode": mode,
                "host": platform.node(), "passed": not failed, "final": final,
                "seconds": elapsed, "budget": a.budget, "facts": f,
                "stages": [dataclasses.asdict(r) for r in self.results.values()]}
        with open(self.path("summary.json"), "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        if a.export:
            export(a.out, a.export)
        return text


def export(out_dir, dest):
    """dest/summary.txt and dest/gpu_check.tar.gz (the whole output folder): two files, which
    is what the device tool brings back from $OUT (at most 8 files, 2 folders deep)."""
    os.makedirs(dest, exist_ok=True)
    shutil.copy(os.path.join(out_dir, "summary.txt"), os.path.join(dest, "summary.txt"))
    tmp = os.path.join(dest, ".gpu_check.tar.gz.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(out_dir, arcname=os.path.basename(os.path.normpath(out_dir)))
    os.replace(tmp, os.path.join(dest, "gpu_check.tar.gz"))


def main(argv=None):
    a = parse_args(argv, description=__doc__.split("\n\n")[0])
    check = Check(a)

    def on_signal(signum, frame):
        proc = RUNNING["proc"]
        if proc is not None:
            kill_group(proc)
        print(check.write_summary(final=True), flush=True)
        print(f"gpu_check: stopped by signal {signum}", file=sys.stderr)
        sys.exit(1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"gpu_check: output in {a.out}; stages: {', '.join(a.selected)}", flush=True)
    check.execute(a.selected)
    print()
    print(check.write_summary(final=True), end="")
    return 1 if check.overall() else 0


if __name__ == "__main__":
    sys.exit(main())

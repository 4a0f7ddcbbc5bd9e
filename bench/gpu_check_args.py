"""The GPU check's stage table and command line (bench/gpu_check.py runs the stages): the stages
in order with their default time limits (gpu_check.py's module doc says how they were set), the
budget, and the arguments with their checks (validate: every mistake is a usage error before
anything runs)."""
import argparse
import datetime
import os
import shutil
import sys
import textwrap

from gpu_check_tools import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import device_deps  # noqa: E402,F401  (tools/device_deps.py; gpu_check.py uses it too)

# name, default time limit in seconds (the module doc says how they were set)
STAGES = [
    ("probe", 20), ("deps", 30), ("configure", 45), ("build", 150), ("ctest", 100),
    ("memcheck", 50), ("racecheck", 50), ("bench-lstmp", 40), ("bench-lstmp-persistent", 20),
    ("bench-softmax", 25), ("bench-adagrad", 20), ("train", 60), ("e2e", 150),
]
STAGE_NAMES = [s[0] for s in STAGES]
DEFAULT_BUDGET = 530
SUMMARY_RESERVE = 10     # seconds kept back for the summary and the export
MIN_STAGE_SECONDS = 5


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None, description=""):
    p = argparse.ArgumentParser(
        description=description,
        epilog=textwrap.fill("Stages in order (default limit): " + ", ".join(
            f"{n} ({t} s)" for n, t in STAGES) + ". The module doc (the head of this file) "
            "says what each runs and how the limits were set.", 79),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder: new, empty, or an earlier check's (replaced); "
                   "default <build-dir>/gpu-check-<UTC time>")
    p.add_argument("--export", help="after every stage, write summary.txt and gpu_check.tar.gz "
                   "(the whole output folder) here: on the device, $OUT")
    p.add_argument("--build-dir", default=os.path.join(REPO, "build-gpu"))
    p.add_argument("--work-dir", help="large temporary files: corpora, run folders, 7 GB "
                   "checkpoints (default <build-dir>/gpu-check-work; emptied after each stage)")
    p.add_argument("--keep-work", action="store_true", help="keep the work folder's files")
    p.add_argument("--deps", default=os.path.join(REPO, ".devdeps"),
                   help="folder from `tools/device_deps.py fetch` (debs/, data/)")
    p.add_argument("--deps-prefix", help="where the .debs are unpacked (default <build-dir>/deps)")
    p.add_argument("--data", help="shared data folder (lm1b-sample/, elmo-fixtures/); default "
                   "<deps>/data, else ../shared/data")
    p.add_argument("--python", default=sys.executable,
                   help="python with torch: the PyTorch reference, and where the nvidia-* wheels "
                   "are looked for")
    p.add_argument("--site", action="append", default=[],
                   help="another folder with nvidia/<lib> wheels' files (repeatable)")
    p.add_argument("--stages", help="comma-separated stages to run (default: all)")
    p.add_argument("--skip", default="", help="comma-separated stages to leave out")
    p.add_argument("--limit", action="append", default=[], metavar="STAGE=SECONDS",
                   help="a stage's time limit (repeatable)")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                   help="seconds for all stages together")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="build processes")
    p.add_argument("--ctest-jobs", type=int, default=8, help="gpu tests run at once")
    p.add_argument("--cuda-arch", default="90", help="CMAKE_CUDA_ARCHITECTURES")
    p.add_argument("--cmake-arg", action="append", default=[], help="extra cmake argument")
    p.add_argument("--sanitize", default="test_kernels_gpu",
                   help="comma-separated test binaries the sanitizers run")
    p.add_argument("--sanitize-filter", default="", help="--gtest_filter for them")
    p.add_argument("--quick-benches", action="store_true",
                   help="the micro-benchmarks' --quick shapes (smoke only, no useful numbers)")
    p.add_argument("--e2e-steps", type=int, default=20)
    p.add_argument("--e2e-warmup", type=int, default=5)
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--train-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra override for the train stage (repeatable)")
    p.add_argument("--cpu", action="store_true",
                   help="no GPU here: real commands, GPU-only stages skip, the e2e and train "
                   "stages run tiny models on the CPU (a plumbing check, not a GPU check)")
    p.add_argument("--dry-run", action="store_true",
                   help="run the plumbing (arguments, library discovery, output layout, the "
                   "summary) with each stage's commands recorded and replaced by a no-op")
    p.add_argument("--simulate", action="append", default=[], metavar="STAGE=fail|timeout",
                   help="--dry-run only: that stage's no-op fails or hangs (tests the failure "
                   "paths)")
    a = p.parse_args(argv)
    try:
        validate(a)
    except UsageError as e:
        p.error(str(e))
    return a


def _stage_list(text, what):
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in STAGE_NAMES]
    if bad:
        raise UsageError(f"{what}: unknown stage {', '.join(bad)} (stages: "
                         f"{', '.join(STAGE_NAMES)})")
    return names


def validate(a):
    a.build_dir = os.path.abspath(a.build_dir)
    a.work_dir = os.path.abspath(a.work_dir or os.path.join(a.build_dir, "gpu-check-work"))
    a.deps = os.path.abspath(a.deps)
    a.deps_prefix = os.path.abspath(a.deps_prefix or os.path.join(a.build_dir, "deps"))
    if a.out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        a.out = os.path.join(a.build_dir, f"gpu-check-{stamp}")
    a.out = os.path.abspath(a.out)
    if os.path.isdir(a.out) and os.listdir(a.out):
        if not os.path.isfile(os.path.join(a.out, "summary.json")):
            raise UsageError(f"--out {a.out} is not empty and holds no earlier gpu_check "
                             "output: name a new folder")
        shutil.rmtree(a.out)  # an earlier check's output: replaced
    if a.export:
        a.export = os.path.abspath(a.export)
    if a.data is None:
        for candidate in (os.path.join(a.deps, "data"), os.path.join(REPO, "..", "shared",
                                                                      "data")):
            if os.path.isdir(candidate):
                a.data = os.path.abspath(candidate)
                break
    elif not os.path.isdir(a.data):
        raise UsageError(f"--data {a.data}: no such folder")
    else:
        a.data = os.path.abspath(a.data)
    chosen = _stage_list(a.stages, "--stages") if a.stages else list(STAGE_NAMES)
    skipped = _stage_list(a.skip, "--skip")
    a.selected = [s for s in STAGE_NAMES if s in chosen and s not in skipped]
    if not a.selected:
        raise UsageError("no stage left to run (--stages / --skip)")
    a.limits = {name: float(limit) for name, limit in STAGES}
    for item in a.limit:
        name, _, value = item.partition("=")
        _stage_list(name, "--limit")
        try:
            seconds = float(value)
        except ValueError:
            raise UsageError(f"--limit {item}: expected STAGE=SECONDS") from None
        if seconds <= 0:
            raise UsageError(f"--limit {item}: the limit must be > 0")
        a.limits[name] = seconds
    if a.budget <= SUMMARY_RESERVE + MIN_STAGE_SECONDS:
        raise UsageError(f"--budget {a.budget}: must be more than "
                         f"{SUMMARY_RESERVE + MIN_STAGE_SECONDS} s")
    for flag in ("jobs", "ctest_jobs", "e2e_steps", "train_steps"):
        if getattr(a, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    if a.e2e_warmup < 1 or a.e2e_warmup >= a.e2e_steps:
        raise UsageError("--e2e-warmup must be >= 1 and below --e2e-steps")
    sim = {}
    for item in a.simulate:
        name, _, what = item.partition("=")
        _stage_list(name, "--simulate")
        if what not in ("fail", "timeout"):
            raise UsageError(f"--simulate {item}: expected STAGE=fail or STAGE=timeout")
        sim[name] = what
    if sim and not a.dry_run:
        raise UsageError("--simulate works with --dry-run only")
    a.simulate = sim
    a.sanitize = [s for s in a.sanitize.split(",") if s.strip()]
    for item in a.train_set:
        if "=" not in item or "." not in item.partition("=")[0]:
            raise UsageError(f"--train-set {item}: expected SECTION.KEY=VALUE")

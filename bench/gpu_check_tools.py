"""The GPU check's tools (bench/gpu_check.py): a command runner with a time limit that kills the
whole process group, and the readers of what the stages print or write (ctest's JUnit file and
output, gtest counts, the torch probe, compute-sanitizer's errors, the benchmarks' JSON, the
train stage's summary). No stage logic here: gpu_check.py's Check runs the stages."""
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import time
import xml.etree.ElementTree as ElementTree


class UsageError(Exception):
    pass


@dataclasses.dataclass
class Result:
    stage: str
    status: str = "not run"   # ok | FAIL | TIMEOUT | skip | dry | not run
    seconds: float = 0.0
    limit: float = 0.0
    key: str = ""             # the stage's key numbers, one line
    note: str = ""            # why it failed or skipped
    log: str = ""             # its log, relative to the output folder

    @property
    def passed(self):
        return self.status in ("ok", "dry", "skip")


# ----------------------------------------------------------------------------------------------
# Running commands
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Ran:
    rc: int
    timed_out: bool
    seconds: float


RUNNING = {"proc": None}   # the running child, for the SIGTERM handler


def run_command(argv, log_path, limit, env=None, cwd=None, append=False):
    """Runs argv with its output (stdout and stderr) in log_path, in a process group of its own
    that is killed (SIGTERM, then SIGKILL 5 s later) when it runs past `limit` seconds."""
    start = time.monotonic()
    with open(log_path, "a" if append else "w", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)
        except OSError as e:
            log.write(f"cannot start {argv[0]}: {e.strerror}\n")
            return Ran(127, False, time.monotonic() - start)
        RUNNING["proc"] = proc
        timed_out = False
        try:
            proc.wait(timeout=max(0.1, limit))
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc)
        finally:
            RUNNING["proc"] = None
        seconds = time.monotonic() - start
        log.write(f"[gpu_check: exit code {proc.returncode}"
                  f"{', stopped at the limit of %.0f s' % limit if timed_out else ''}, "
                  f"{seconds:.1f} s]\n")
    return Ran(proc.returncode, timed_out, seconds)


def kill_group(proc):
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------------------------
# Reading results (each returns key numbers; none needs a GPU, so tests feed them files)
# ----------------------------------------------------------------------------------------------

def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def junit_counts(path):
    """{passed, failed, skipped, failed_names, skipped_names} from ctest's --output-junit."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    out = {"passed": 0, "failed": 0, "skipped": 0, "failed_names": [], "skipped_names": []}
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        status = case.get("status", "")
        if case.find("failure") is not None or case.find("error") is not None or \
                status == "fail":
            out["failed"] += 1
            out["failed_names"].append(name)
        elif case.find("skipped") is not None or status in ("notrun", "disabled"):
            out["skipped"] += 1
            out["skipped_names"].append(name)
        else:
            out["passed"] += 1
    return out


def gtest_counts(text):
    """(passed, failed, skipped) from GoogleTest's closing lines, summed over every test binary
    in the text; None where no binary printed that line."""
    def count(label):
        found = re.findall(rf"^\[\s*{label}\s*\] (\d+) tests?", text, re.M)
        return sum(int(n) for n in found) if found else None
    return count("PASSED"), count("FAILED"), count("SKIPPED")


def ctest_commands(build_dir):
    """{test name: [program, args...]} from every CTestTestfile.cmake under build_dir."""
    out = {}
    for root, dirs, files in os.walk(build_dir):
        dirs[:] = [d for d in dirs if d not in ("CMakeFiles", "deps") and
                   not d.startswith("gpu-check")]
        if "CTestTestfile.cmake" not in files:
            continue
        with open(os.path.join(root, "CTestTestfile.cmake"), encoding="utf-8") as f:
            for line in f:
                m = re.match(r"add_test\(\[=\[(.*?)\]=\] (.*)\)\s*$", line)
                if m:
                    out[m.group(1)] = [a.replace('\\"', '"') for a in
                                       re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))]
    return out


def test_targets(commands):
    """The build targets behind test commands: test_* / bench_* programs, run directly or
    through the smoke script's -DBENCH=."""
    targets = set()
    for command in commands:
        for arg in command:
            m = re.match(r"(?:-DBENCH=)?.*/((?:test|bench)_\w+)$", arg)
            if m and not arg.endswith(".cmake"):
                targets.add(m.group(1))
    return sorted(targets)


TORCH_PROBE = """import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn',
      torch.backends.cudnn.version(), 'gpu', torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('torch device:', p.name, '|', p.total_memory // 2**20, 'MiB |', f'{p.major}.{p.minor}')
"""


def probe_facts(text):
    """GPU name, driver, memory, compute capability and torch's versions from the probe's log
    (nvidia-smi's CSV line; torch's lines when nvidia-smi is missing)."""
    facts = {}
    smi = re.search(r"^(?!\$)([^,\n]*(?:NVIDIA|H100|H200)[^,\n]*), ([\d.]+), (\d+ MiB), "
                    r"([\d.]+)$", text, re.M)
    if smi:
        facts.update(gpu=smi.group(1).strip(), driver=smi.group(2), gpu_memory=smi.group(3),
                     compute_capability=smi.group(4))
    torch_line = re.search(r"^torch (\S+) cuda (\S+) cudnn (\S+) gpu (\S+)$", text, re.M)
    if torch_line:
        facts.update(torch=torch_line.group(1), torch_cuda=torch_line.group(2),
                     torch_gpu=torch_line.group(4))
    device = re.search(r"^torch device: (.*) \| (\d+) MiB \| ([\d.]+)$", text, re.M)
    if device and not smi:
        facts.update(gpu=device.group(1), gpu_memory=f"{device.group(2)} MiB",
                     compute_capability=device.group(3))
    return facts


def _names(names, most):
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def ctest_verdict(counts, listed, rc, timed_out, cpu):
    """(status, key numbers, note) of the ctest stage from its JUnit counts, the number of gpu
    tests ctest lists, its exit code, whether the stage limit stopped it, and --cpu."""
    ran = counts["passed"] + counts["failed"] + counts["skipped"]
    total = max(ran, listed)
    not_run = total - ran  # left out by --stop-time
    key = (f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
           f"of {total}" + (f", {not_run} not run" if not_run else ""))
    notes = []
    if counts["failed"]:
        notes.append("failed: " + _names(counts["failed_names"], 6))
    if not_run:
        notes.append(f"{not_run} not run: the time limit stopped ctest")
    if counts["skipped"] and counts["passed"]:
        notes.append("skipped: " + _names(counts["skipped_names"], 4))
    if timed_out:
        status = "TIMEOUT"
    elif counts["failed"]:
        status = "FAIL"
    elif not_run:
        status = "TIMEOUT"
    elif counts["passed"] == 0 and cpu:
        return "skip", key, f"no GPU (--cpu): all {total} gpu tests skipped"
    elif counts["passed"] == 0:
        status = "FAIL"
        notes.append("every gpu test skipped: " + _names(counts["skipped_names"], 4))
    elif rc != 0:
        status = "FAIL"
        notes.append(f"ctest exited with {rc}")
    else:
        status = "ok"
    return status, key, "; ".join(notes)


def sanitizer_errors(text):
    """Errors compute-sanitizer reported, summed over its runs in the text (memcheck 'ERROR
    SUMMARY: N errors', racecheck 'RACECHECK SUMMARY: N hazards displayed (E errors, W
    warnings)'), or None when no run got as far as its summary."""
    race = re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, \d+ "
                      r"warnings?\)", text)
    plain = re.findall(r"ERROR SUMMARY: (\d+) errors?", text)
    found = race + plain
    return sum(int(n) for n in found) if found else None


def bench_key(name, data):
    """One line of key numbers from a GPU benchmark's JSON."""
    if not data or not data.get("cases"):
        return "no cases in its JSON"
    cases = data["cases"]
    bad = sum(1 for c in cases if c.get("ok") is False or c.get("wrong") or
              c.get("untouched_wrong"))
    head = f"{len(cases)} cases, {'all checks ok' if not bad else f'{bad} WRONG'}"
    if name == "bench_lstmp":
        parts = [f"{c['precision']} {c['ratio_ours_over_cudnn']:.2f}" for c in cases
                 if c.get("shape") == "elmo" and c.get("B") == 128]
        return head + "; ours/cuDNN ms at elmo B128: " + ", ".join(parts) if parts else head
    if name == "bench_sampled_softmax":
        first = cases[0].get("rows")
        parts = [f"{c['precision']} {c['ratio_ours_over_ref']:.2f}" for c in cases
                 if c.get("rows") == first]
        return head + f"; ours/ref ms at N {first}: " + ", ".join(parts)
    if name == "bench_adagrad":
        parts = [f"{c['rows'] // 1000}k {c['percent_of_copy']:.0f}%" for c in cases
                 if c.get("dim", 0) > 1]
        return head + "; % of copy GB/s at dim 512: " + ", ".join(parts)
    return head


def e2e_key(data):
    if not data or not data.get("rows"):
        return "no rows in its JSON"
    parts = []
    for row in data["rows"]:
        if row.get("program") != "elmo_fast":
            continue
        peak = row.get("peak_memory_bytes")
        mfu = row.get("mfu")
        parts.append(f"{row['precision']} {row['tokens_per_s']:.0f} tok/s "
                     f"x{row.get('ratio', 0):.2f} vs torch"
                     + (f" MFU {100 * mfu:.1f}%" if mfu is not None else "")
                     + (f" {peak / 2**30:.1f} GiB" if peak else ""))
    return "; ".join(parts)


def train_key(summary):
    if not summary:
        return "no summary.json"
    parts = [f"{summary.get('steps')} steps", f"{summary.get('tokens_per_s', 0):.0f} tok/s"]
    if summary.get("median_step_ms") is not None:
        parts.append(f"median step {summary['median_step_ms']:.0f} ms")
    if summary.get("peak_device_memory_bytes") is not None:
        parts.append(f"peak device memory {summary['peak_device_memory_bytes'] / 2**30:.2f} GiB")
    if summary.get("final_train_loss") is not None:
        parts.append(f"loss {summary['final_train_loss']:.2f}")
    valid = summary.get("valid")
    if isinstance(valid, dict):
        ppl = valid.get("perplexity") or valid.get("ppl")
        if isinstance(ppl, (int, float)):
            parts.append(f"valid ppl {ppl:.0f}")
    return ", ".join(parts)


def pad_vocab(sample_vocab, out_path, size):
    """Writes sample_vocab's words, then filler words (never in any text) up to `size` lines:
    an elmo-1b-sized embedding and softmax on the sample's text. Returns the filler count."""
    with open(sample_vocab, encoding="utf-8") as f:
        words = [line.rstrip("\n") for line in f if line.strip()]
    if len(words) > size:
        raise ValueError(f"{sample_vocab} has {len(words)} words, more than {size}")
    fill = size - len(words)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(words))
        f.write("\n")
        for k in range(fill):
            f.write(f"<gpu_check_filler_{k}>\n")
    return fill


# ----------------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------------

def shorten(argv, width=62):
    """A command for the summary's one line: folders of this run as names, cut at `width`."""
    text = " ".join(os.path.basename(x) if os.path.isabs(x) else x for x in argv)
    return text if len(text) <= width else text[:width - 3] + "..."

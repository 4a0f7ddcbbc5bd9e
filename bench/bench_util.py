"""Helpers shared by the end-to-end benchmark scripts (bench_train_cpu.py, bench_train_gpu.py)
and the PyTorch references in bench/reference/: error exits, running a program with its output
echoed and logged, the vocabulary size elmo_fast sees, table cells."""

import subprocess
import sys


def fail(program, message, code=1):
    """Prints "<program>: <message>" to stderr and exits with `code`."""
    print(f"{program}: {message}", file=sys.stderr)
    sys.exit(code)


def run_logged(program, command, log_path, timeout, what, env=None):
    """Runs `command`, echoing its output and saving it to `log_path`; exits through fail() when
    it cannot start, runs past `timeout` seconds or exits non-zero."""
    print(f"{program}: {what}: {' '.join(command)}", flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env)
        except OSError as e:
            fail(program, f"{what}: cannot start {command[0]} ({e.strerror})")
        try:
            for line in proc.stdout:
                log.write(line)
                print(f"  | {line}", end="", flush=True)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail(program, f"{what}: no result after {timeout} s (log: {log_path})")
    if proc.returncode != 0:
        fail(program, f"{what} exited with {proc.returncode}; log: {log_path}")


def count_vocab(path):
    """Tokens of a vocab file as elmo_fast loads it: non-empty lines, plus any of <S> </S> <UNK>
    that are missing (added at the front)."""
    words = set()
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                n += 1
                words.add(fields[0])
    return n + sum(1 for s in ("<S>", "</S>", "<UNK>") if s not in words)


def fmt(value, spec):
    """A table cell: "-" for a missing value."""
    return "-" if value is None else format(value, spec)

"""Tests of bench/gpu_check.py that run on a machine without a GPU: the stage runner's time
limit (the whole process group goes), the readers of each stage's results (ctest's JUnit XML,
GoogleTest and compute-sanitizer output, the benchmarks' JSON, elmo_fast's summary.json), the
vocabulary padding, argument checking, and whole dry runs: all green, a failed stage, a stage
at its time limit, a budget that runs out, the export for the device tool.

Run: python3 -m unittest discover -s tests/bench -p 'test_*.py'   (CTest: gpu_check_unit)
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "bench", "gpu_check.py")
sys.path.insert(0, os.path.join(REPO, "bench"))
import gpu_check  # noqa: E402


class TempDirTest(unittest.TestCase):
    """self.tmp: a fresh folder per test, removed after it."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="gpu-check-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


class Runner(TempDirTest):

    def test_output_and_exit_code_in_the_log(self):
        log = os.path.join(self.tmp, "a.log")
        ran = gpu_check.run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], log, 30)
        self.assertEqual((ran.rc, ran.timed_out), (3, False))
        with open(log) as f:
            text = f.read()
        self.assertIn("out\n", text)
        self.assertIn("err\n", text)
        self.assertIn("exit code 3", text)

    def test_limit_kills_the_whole_process_group(self):
        log = os.path.join(self.tmp, "b.log")
        pid_file = os.path.join(self.tmp, "child.pid")
        start = time.monotonic()
        ran = gpu_check.run_command(
            ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], log, 1.0)
        self.assertTrue(ran.timed_out)
        self.assertLess(time.monotonic() - start, 15)
        with open(pid_file) as f:
            child = int(f.read())
        # The grandchild (sleep) is gone too: no process, or a zombie nobody reaped yet. It got
        # the signal with the group, but on a loaded machine it may take a moment to die.
        state = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{child}/status") as f:
                    state = next(line for line in f if line.startswith("State:"))
            except FileNotFoundError:
                state = "gone"
            if state == "gone" or "Z" in state:
                break
            time.sleep(0.05)
        self.assertTrue(state == "gone" or "Z" in state, state)
        with open(log) as f:
            self.assertIn("stopped at the limit of 1 s", f.read())

    def test_a_missing_program_is_exit_127(self):
        ran = gpu_check.run_command(["/nonexistent/program"], os.path.join(self.tmp, "c.log"), 5)
        self.assertEqual(ran.rc, 127)


class Readers(TempDirTest):

    def test_junit_counts(self):
        # The shape ctest --output-junit writes (CMake 3.21+).
        path = os.path.join(self.tmp, "j.xml")
        with open(path, "w") as f:
            f.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuite tests="4">\n'
                    '<testcase name="Gemm.Tf32" status="run" time="0.5"/>\n'
                    '<testcase name="Bilm.Golden" status="fail" time="1">'
                    '<failure message="Failed"/></testcase>\n'
                    '<testcase name="Persistent.Elmo" status="notrun" time="0">'
                    '<skipped message="skipped"/></testcase>\n'
                    '<testcase name="Nccl.Ring" status="run" time="2"/>\n</testsuite>\n')
        got = gpu_check.junit_counts(path)
        self.assertEqual((got["passed"], got["failed"], got["skipped"]), (2, 1, 1))
        self.assertEqual(got["failed_names"], ["Bilm.Golden"])
        self.assertEqual(got["skipped_names"], ["Persistent.Elmo"])
        self.assertIsNone(gpu_check.junit_counts(os.path.join(self.tmp, "missing.xml")))

    def test_ctest_verdict(self):
        def counts(passed, failed, skipped):
            return {"passed": passed, "failed": failed, "skipped": skipped,
                    "failed_names": [f"F{i}" for i in range(failed)],
                    "skipped_names": [f"S{i}" for i in range(skipped)]}
        verdict = gpu_check.ctest_verdict
        self.assertEqual(verdict(counts(70, 0, 0), 70, 0, False, False),
                         ("ok", "70 passed, 0 failed, 0 skipped of 70", ""))
        status, key, note = verdict(counts(60, 2, 1), 70, 8, False, False)
        self.assertEqual(status, "FAIL")
        self.assertEqual(key, "60 passed, 2 failed, 1 skipped of 70, 7 not run")
        self.assertEqual(note, "failed: F0, F1; 7 not run: the time limit stopped ctest; "
                               "skipped: S0")
        self.assertEqual(verdict(counts(50, 0, 0), 70, 8, False, False)[0], "TIMEOUT")
        self.assertEqual(verdict(counts(50, 0, 0), 70, -15, True, False)[0], "TIMEOUT")
        # Every test skipped: no GPU. A failure with a GPU expected, a skip with --cpu.
        self.assertEqual(verdict(counts(0, 0, 70), 70, 0, False, False)[0], "FAIL")
        self.assertEqual(verdict(counts(0, 0, 70), 70, 0, False, True),
                         ("skip", "0 passed, 0 failed, 70 skipped of 70",
                          "no GPU (--cpu): all 70 gpu tests skipped"))
        self.assertEqual(verdict(counts(70, 0, 0), 70, 8, False, False)[0], "FAIL")

    def test_targets_from_ctest_files(self):
        build = os.path.join(self.tmp, "build")
        os.makedirs(os.path.join(build, "tests"))
        with open(os.path.join(build, "tests", "CTestTestfile.cmake"), "w") as f:
            f.write('add_test([=[Gemm.Tf32]=] "/b/tests/test_runtime_gpu" '
                    '"--gtest_filter=Gemm.Tf32")\n'
                    'set_tests_properties([=[Gemm.Tf32]=] PROPERTIES LABELS "gpu")\n'
                    'add_test([=[bench_adagrad_smoke]=] "/usr/bin/cmake" '
                    '"-DBENCH=/b/bench/bench_adagrad" "-DJSON=/b/tests/bench_adagrad.json" '
                    '"-P" "/src/tests/bench/run_gpu_bench_smoke.cmake")\n'
                    'add_test([=[Say.Quote]=] "/b/tests/test_io" "a \\"b\\"")\n')
        commands = gpu_check.ctest_commands(build)
        self.assertEqual(commands["Gemm.Tf32"],
                         ["/b/tests/test_runtime_gpu", "--gtest_filter=Gemm.Tf32"])
        self.assertEqual(commands["Say.Quote"], ["/b/tests/test_io", 'a "b"'])
        self.assertEqual(gpu_check.test_targets([commands["Gemm.Tf32"],
                                                 commands["bench_adagrad_smoke"]]),
                         ["bench_adagrad", "test_runtime_gpu"])

    def test_probe_facts(self):
        smi = ("$ nvidia-smi --query-gpu=...\nNVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB, 9.0\n"
               "torch 2.11.0+cu130 cuda 13.0 cudnn 91900 gpu True\n"
               "torch device: NVIDIA H100 80GB HBM3 | 81090 MiB | 9.0\n")
        self.assertEqual(gpu_check.probe_facts(smi), {
            "gpu": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "gpu_memory": "81559 MiB",
            "compute_capability": "9.0", "torch": "2.11.0+cu130", "torch_cuda": "13.0",
            "torch_gpu": "True"})
        # No nvidia-smi: torch's view of the device.
        no_smi = smi.split("\n", 2)[2]
        self.assertEqual(gpu_check.probe_facts(no_smi)["gpu_memory"], "81090 MiB")
        self.assertNotIn("driver", gpu_check.probe_facts(no_smi))
        self.assertEqual(gpu_check.probe_facts("cannot start nvidia-smi\n"), {})

    def test_gtest_and_sanitizer_lines(self):
        text = ("[==========] 23 tests from 9 test suites ran.\n[  PASSED  ] 21 tests.\n"
                "[  SKIPPED ] 1 test, listed below:\n[  FAILED  ] 1 test, listed below:\n"
                "========= ERROR SUMMARY: 4 errors\n")
        self.assertEqual(gpu_check.gtest_counts(text), (21, 1, 1))
        self.assertEqual(gpu_check.sanitizer_errors(text), 4)
        race = "========= RACECHECK SUMMARY: 12 hazards displayed (2 errors, 10 warnings)\n"
        self.assertEqual(gpu_check.sanitizer_errors(race), 2)
        self.assertEqual(gpu_check.gtest_counts("nothing"), (None, None, None))
        two = text + "[  PASSED  ] 5 tests.\n========= ERROR SUMMARY: 0 errors\n"
        self.assertEqual(gpu_check.gtest_counts(two), (26, 1, 1))
        self.assertEqual(gpu_check.sanitizer_errors(two), 4)
        self.assertIsNone(gpu_check.sanitizer_errors("killed"))

    def test_bench_keys(self):
        lstmp = {"cases": [
            {"shape": "elmo", "B": 128, "precision": "fp32", "ratio_ours_over_cudnn": 1.25,
             "ok": True},
            {"shape": "elmo", "B": 128, "precision": "bf16", "ratio_ours_over_cudnn": 0.5,
             "ok": True},
            {"shape": "elmo", "B": 256, "precision": "fp32", "ratio_ours_over_cudnn": 9,
             "ok": False}]}
        self.assertEqual(gpu_check.bench_key("bench_lstmp", lstmp),
                         "3 cases, 1 WRONG; ours/cuDNN ms at elmo B128: fp32 1.25, bf16 0.50")
        softmax = {"cases": [{"rows": 2560, "precision": "tf32", "ratio_ours_over_ref": 0.4,
                              "ok": True},
                             {"rows": 5120, "precision": "tf32", "ratio_ours_over_ref": 0.3,
                              "ok": True}]}
        self.assertEqual(gpu_check.bench_key("bench_sampled_softmax", softmax),
                         "2 cases, all checks ok; ours/ref ms at N 2560: tf32 0.40")
        adagrad = {"cases": [{"rows": 10000, "dim": 512, "percent_of_copy": 71.4, "wrong": 0,
                              "untouched_wrong": 0},
                             {"rows": 10000, "dim": 1, "percent_of_copy": 20, "wrong": 0,
                              "untouched_wrong": 2}]}
        self.assertEqual(gpu_check.bench_key("bench_adagrad", adagrad),
                         "2 cases, 1 WRONG; % of copy GB/s at dim 512: 10k 71%")
        self.assertEqual(gpu_check.bench_key("bench_adagrad", None), "no cases in its JSON")

    def test_e2e_and_train_keys(self):
        e2e = {"rows": [
            {"program": "elmo_fast", "precision": "bf16", "tokens_per_s": 123456.0,
             "ratio": 2.5, "mfu": 0.312, "peak_memory_bytes": 3 * 2**30},
            {"program": "pytorch", "precision": "bf16", "tokens_per_s": 49382.0}]}
        self.assertEqual(gpu_check.e2e_key(e2e),
                         "bf16 123456 tok/s x2.50 vs torch MFU 31.2% 3.0 GiB")
        summary = {"steps": 30, "tokens_per_s": 51234.5, "median_step_ms": 49.6,
                   "peak_device_memory_bytes": int(12.5 * 2**30), "final_train_loss": 7.25,
                   "valid": {"perplexity": 912.3}}
        self.assertEqual(gpu_check.train_key(summary),
                         "30 steps, 51234 tok/s, median step 50 ms, peak device memory "
                         "12.50 GiB, loss 7.25, valid ppl 912")
        self.assertEqual(gpu_check.train_key(None), "no summary.json")

    def test_pad_vocab(self):
        sample = os.path.join(self.tmp, "v.txt")
        with open(sample, "w") as f:
            f.write("</S>\n<S>\n<UNK>\nthe\n\n,\n")
        out = os.path.join(self.tmp, "padded.txt")
        self.assertEqual(gpu_check.pad_vocab(sample, out, 10), 5)
        with open(out) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 10)
        self.assertEqual(lines[:5], ["</S>", "<S>", "<UNK>", "the", ","])
        self.assertEqual(len(set(lines)), 10)
        with self.assertRaises(ValueError):
            gpu_check.pad_vocab(sample, out, 3)


def run_script(*args, timeout=120):
    proc = subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


class DryRun(TempDirTest):
    def setUp(self):
        super().setUp()
        self.out = os.path.join(self.tmp, "out")
        self.common = ["--dry-run", "--build-dir", os.path.join(self.tmp, "build"),
                       "--out", self.out]

    def summary(self):
        with open(os.path.join(self.out, "summary.json")) as f:
            data = json.load(f)
        return data, {s["stage"]: s for s in data["stages"]}

    def test_all_stages_recorded_and_green(self):
        export = os.path.join(self.tmp, "export")
        rc, out, err = run_script(*self.common, "--export", export)
        self.assertEqual(rc, 0, out + err)
        data, stages = self.summary()
        self.assertTrue(data["passed"])
        self.assertTrue(data["final"])
        self.assertEqual(list(stages), gpu_check.STAGE_NAMES)
        self.assertEqual({s["status"] for s in stages.values()}, {"dry"})
        for name in gpu_check.STAGE_NAMES:  # every stage left a log saying what it would run
            with open(os.path.join(self.out, stages[name]["log"] or f"{name}.log")) as f:
                text = f.read()
            self.assertTrue("dry run" in text or name == "deps", name)
        with open(os.path.join(self.out, "ctest.log")) as f:
            self.assertIn("-L gpu", f.read())
        with open(os.path.join(self.out, "summary.txt")) as f:
            text = f.read()
        self.assertIn("PASSED", text)
        self.assertIn("mode: dry run", text)
        self.assertLess(len(text.splitlines()), 60)  # one page
        # The library discovery ran for real and wrote its findings.
        with open(os.path.join(self.out, "gpu_libs.json")) as f:
            self.assertIn("cmake_args", json.load(f))
        # Export: two files, the summary and the whole folder.
        self.assertEqual(sorted(os.listdir(export)), ["gpu_check.tar.gz", "summary.txt"])
        with tarfile.open(os.path.join(export, "gpu_check.tar.gz")) as tar:
            names = tar.getnames()
        self.assertIn("out/summary.json", names)
        self.assertIn("out/train.log", names)

    def test_a_failed_stage_fails_the_check_and_the_rest_still_run(self):
        rc, out, err = run_script(*self.common, "--simulate", "ctest=fail")
        self.assertEqual(rc, 1, out + err)
        data, stages = self.summary()
        self.assertFalse(data["passed"])
        self.assertEqual(stages["ctest"]["status"], "FAIL")
        self.assertIn("exited with 1", stages["ctest"]["note"])
        self.assertEqual(stages["train"]["status"], "dry")  # later stages ran
        self.assertIn("FAILED (1 of 13 stages)", out)

    def test_a_stage_at_its_limit_is_stopped(self):
        start = time.monotonic()
        rc, out, err = run_script(*self.common, "--simulate", "build=timeout",
                                  "--limit", "build=2")
        self.assertEqual(rc, 1, out + err)
        self.assertLess(time.monotonic() - start, 60)
        _, stages = self.summary()
        self.assertEqual(stages["build"]["status"], "TIMEOUT")
        self.assertGreaterEqual(stages["build"]["seconds"], 1.9)
        self.assertLess(stages["build"]["seconds"], 15)
        self.assertEqual(stages["ctest"]["status"], "dry")

    def test_the_budget_cuts_the_stages_it_cannot_fit(self):
        # 16 s budget - 10 s kept for the summary: probe gets 6 s, then nothing is left.
        rc, out, err = run_script(*self.common, "--budget", "16", "--simulate", "probe=timeout",
                                  "--limit", "probe=100")
        self.assertEqual(rc, 1, out + err)
        _, stages = self.summary()
        self.assertEqual(stages["probe"]["status"], "TIMEOUT")
        self.assertLessEqual(stages["probe"]["limit"], 6.5)
        self.assertEqual(stages["train"]["status"], "not run")
        self.assertEqual(stages["train"]["note"], "budget spent")

    def test_stage_selection(self):
        rc, out, err = run_script(*self.common, "--stages", "deps,ctest,train", "--skip", "ctest")
        self.assertEqual(rc, 0, out + err)
        _, stages = self.summary()
        self.assertEqual(list(stages), ["deps", "train"])

    def test_later_stages_alone_still_get_the_environment(self):
        rc, out, err = run_script(*self.common, "--stages", "train")
        self.assertEqual(rc, 0, out + err)
        _, stages = self.summary()
        self.assertEqual(list(stages), ["train"])
        # No deps row, but its work was done: the library discovery's files are there.
        self.assertTrue(os.path.isfile(os.path.join(self.out, "gpu_libs.json")))
        self.assertTrue(os.path.isfile(os.path.join(self.out, "deps.log")))

    def test_an_earlier_output_folder_is_replaced_a_foreign_one_refused(self):
        self.assertEqual(run_script(*self.common, "--stages", "probe")[0], 0)
        self.assertEqual(run_script(*self.common, "--stages", "deps")[0], 0)
        _, stages = self.summary()
        self.assertEqual(list(stages), ["deps"])
        self.assertFalse(os.path.exists(os.path.join(self.out, "probe.log")))
        foreign = os.path.join(self.tmp, "foreign")
        os.makedirs(foreign)
        with open(os.path.join(foreign, "keep.txt"), "w") as f:
            f.write("mine")
        rc, _, err = run_script("--dry-run", "--out", foreign)
        self.assertEqual(rc, 2)
        self.assertIn("not empty", err)
        self.assertTrue(os.path.exists(os.path.join(foreign, "keep.txt")))

    def test_bad_arguments_are_usage_errors(self):
        for args, message in [
                (["--stages", "probe,nosuch"], "unknown stage nosuch"),
                (["--skip", "bogus"], "unknown stage bogus"),
                (["--limit", "build"], "expected STAGE=SECONDS"),
                (["--limit", "build=-1"], "must be > 0"),
                (["--limit", "nosuch=5"], "unknown stage"),
                (["--budget", "10"], "--budget 10"),
                (["--simulate", "ctest=explode"], "STAGE=fail or STAGE=timeout"),
                (["--e2e-steps", "5", "--e2e-warmup", "5"], "--e2e-warmup"),
                (["--train-set", "novalue"], "SECTION.KEY=VALUE"),
                (["--data", os.path.join(self.tmp, "nope")], "no such folder"),
                (["--stages", "probe", "--skip", "probe"], "no stage left")]:
            rc, _, err = run_script(*self.common, *args)
            self.assertEqual(rc, 2, args)
            self.assertIn(message, err, args)
        rc, _, err = run_script("--simulate", "ctest=fail", "--out", self.out)
        self.assertEqual(rc, 2)
        self.assertIn("--dry-run only", err)


if __name__ == "__main__":
    unittest.main()

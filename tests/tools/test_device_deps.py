"""Tests of tools/device_deps.py that need no apt, no GPU and no network: the package closure on
a fake dpkg database, .deb extraction and relocation on a .deb built here, the overlay of missing
libraries, and the search for nvcc / cuBLAS / cuDNN / NCCL / compute-sanitizer in a fake toolkit
and a fake tree of PyTorch's nvidia-* wheels.

Run: python3 -m unittest discover -s tests/tools -p 'test_*.py'   (CTest: device_deps_unit)
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
from unittest import mock

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))
import device_deps  # noqa: E402


def write(path, text="", mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    if mode:
        os.chmod(path, mode)
    return path


def make_deb(path, files, links=()):
    """A minimal .deb (ar: debian-binary, control.tar.gz, data.tar.gz) holding `files`
    ({path: text}) and `links` ([(path, target)])."""
    def tar_bytes(entries, symlinks):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, text in entries.items():
                data = text.encode()
                info = tarfile.TarInfo("./" + name.lstrip("/"))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for name, target in symlinks:
                info = tarfile.TarInfo("./" + name.lstrip("/"))
                info.type = tarfile.SYMTYPE
                info.linkname = target
                tar.addfile(info)
        return buf.getvalue()

    os.makedirs(os.path.dirname(path), exist_ok=True)
    members = [("debian-binary", b"2.0\n"),
               ("control.tar.gz", tar_bytes({"control": "Package: fake\n"}, [])),
               ("data.tar.gz", tar_bytes(files, links))]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, data in members:
            header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
            f.write(header.encode())
            f.write(data)
            if len(data) % 2:
                f.write(b"\n")


def pkg(depends="", pre="", version="1"):
    """One entry of a fake installed_packages() map."""
    return {"depends": depends, "pre": pre, "version": version}


class PackageClosure(unittest.TestCase):
    INSTALLED = {
        "libfoo-dev": pkg("libfoo1 (= 1.0), libbar-dev, zlib1g-dev | libz-dev", version="1.0"),
        "libfoo1": pkg("libc6 (>= 2.34), libbaz2 | libqux2, libstdc++6", version="1.0"),
        "libbar-dev": pkg("libbar0", version="2"),
        "libbar0": pkg(version="2"),
        "libqux2": pkg("adduser", pre="libc6", version="3"),
        "libc6": pkg(version="2.36"),
        "libstdc++6": pkg(version="12"),
        "zlib1g-dev": pkg(),
        "adduser": pkg(),
    }

    def test_follows_libraries_and_installed_alternatives(self):
        got = device_deps.package_closure(["libfoo-dev"], self.INSTALLED)
        # libqux2 is the installed alternative of libbaz2 | libqux2; -dev dependencies that are
        # not roots (libbar-dev, zlib1g-dev), non-libraries (adduser) and the C/C++ runtime
        # (libc6, libstdc++6) are not fetched.
        self.assertEqual(got, {"libfoo-dev": "1.0", "libfoo1": "1.0", "libqux2": "3"})

    def test_roots_are_fetched_even_when_dev(self):
        got = device_deps.package_closure(["libfoo-dev", "libbar-dev"], self.INSTALLED)
        self.assertIn("libbar-dev", got)
        self.assertIn("libbar0", got)

    def test_a_root_not_installed_says_what_to_do(self):
        with self.assertRaisesRegex(device_deps.DepsError, "setup.sh"):
            device_deps.package_closure(["libnothere-dev"], self.INSTALLED)

    def test_parse_depends(self):
        self.assertEqual(device_deps._parse_depends("a (>= 1) | b:any, c [amd64]"),
                         [["a", "b"], ["c"]])


class Unpack(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="device-deps-test-")
        self.deps = os.path.join(self.tmp, "deps")
        make_deb(os.path.join(self.deps, "debs", "libfoo-dev_1_amd64.deb"), {
            "usr/lib/x86_64-linux-gnu/libfoo.so.1.2": "ELF",
            "usr/lib/x86_64-linux-gnu/pkgconfig/foo.pc":
                "prefix=/usr\nlibdir=/usr/lib/x86_64-linux-gnu\nCflags: -I/usr/include/foo\n",
            "usr/lib/x86_64-linux-gnu/cmake/foo/fooConfig.cmake":
                'set(FOO_INCLUDE "/usr/include/foo")\nset(FOO_ROOT "/usr")\n'
                'set(OTHER "/usrx/lib")\n',
            "usr/include/foo/foo.h": "int foo();\n",
            "lib/x86_64-linux-gnu/libold.so.2": "ELF",
        }, links=[("usr/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo.so.1.2"),
                  ("usr/lib/x86_64-linux-gnu/libfoo.so", "/usr/lib/x86_64-linux-gnu/libfoo.so.1"),
                  ("usr/lib/x86_64-linux-gnu/libhave.so.3", "libfoo.so.1.2")])
        self.prefix = os.path.join(self.tmp, "prefix")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check_unpacked(self, info):
        p = self.prefix
        with open(os.path.join(p, "usr/lib/x86_64-linux-gnu/pkgconfig/foo.pc")) as f:
            pc = f.read()
        self.assertIn(f"prefix={p}/usr\n", pc)
        self.assertIn(f"libdir={p}/usr/lib/x86_64-linux-gnu\n", pc)
        self.assertIn(f"-I{p}/usr/include/foo", pc)
        with open(os.path.join(p, "usr/lib/x86_64-linux-gnu/cmake/foo/fooConfig.cmake")) as f:
            cmake = f.read()
        self.assertIn(f'"{p}/usr/include/foo"', cmake)
        self.assertIn(f'"{p}/usr"', cmake)
        self.assertIn('"/usrx/lib"', cmake)  # not a /usr path: untouched
        # The absolute symlink now points into the prefix.
        self.assertEqual(os.readlink(os.path.join(p, "usr/lib/x86_64-linux-gnu/libfoo.so")),
                         f"{p}/usr/lib/x86_64-linux-gnu/libfoo.so.1")
        # Overlay: what the machine lacks (libfoo, libold from /lib), not what it has (libhave).
        self.assertEqual(info["overlay"], ["libfoo.so.1", "libfoo.so.1.2", "libold.so.2"])
        self.assertTrue(os.path.exists(os.path.join(p, "overlay", "libold.so.2")))
        self.assertFalse(os.path.lexists(os.path.join(p, "overlay", "libhave.so.3")))
        env = info["env"]
        self.assertEqual(env["LD_LIBRARY_PATH"], os.path.join(p, "overlay") + os.pathsep + "/x")
        self.assertEqual(env["CMAKE_PREFIX_PATH"], os.path.join(p, "usr"))
        self.assertIn(os.path.join(p, "usr/lib/x86_64-linux-gnu/pkgconfig"),
                      env["PKG_CONFIG_PATH"].split(os.pathsep))
        with open(os.path.join(p, "env.json")) as f:
            self.assertEqual(json.load(f)["env"], env)
        with open(os.path.join(p, "env.sh")) as f:
            self.assertIn(f"export CMAKE_PREFIX_PATH='{p}/usr'", f.read())

    def unpack(self):
        return device_deps.unpack(self.deps, self.prefix, have={"libhave.so.3"},
                                  environ={"LD_LIBRARY_PATH": "/x", "PATH": "/nonexistent"})

    @unittest.skipUnless(shutil.which("dpkg-deb"), "no dpkg-deb here")
    def test_unpack_with_dpkg_deb(self):
        self.check_unpacked(self.unpack())

    def test_unpack_with_python_only(self):
        real_which = shutil.which
        with mock.patch.object(device_deps.shutil, "which",
                               lambda name, **kw: None if name == "dpkg-deb"
                               else real_which(name, **kw)):
            info = self.unpack()
        self.check_unpacked(info)
        # No pkg-config on PATH (PATH=/nonexistent) and none packed: PKG_CONFIG not set.
        self.assertNotIn("PKG_CONFIG", info["env"])

    def test_second_unpack_reuses_and_a_foreign_folder_is_refused(self):
        first = self.unpack()
        self.assertFalse(first["reused"])
        second = self.unpack()
        self.assertTrue(second["reused"])
        self.assertEqual(second["overlay"], first["overlay"])
        self.check_unpacked(second)
        foreign = os.path.join(self.tmp, "foreign")
        write(os.path.join(foreign, "mine.txt"), "keep")
        with self.assertRaisesRegex(device_deps.DepsError, "not made by device_deps"):
            device_deps.unpack(self.deps, foreign, have=set())
        self.assertTrue(os.path.exists(os.path.join(foreign, "mine.txt")))

    def test_refuses_root_prefix_and_missing_debs(self):
        with self.assertRaisesRegex(device_deps.DepsError, "never into /"):
            device_deps.unpack(self.deps, "/usr", have=set())
        with self.assertRaisesRegex(device_deps.DepsError, "fetch"):
            device_deps.unpack(os.path.join(self.tmp, "empty"), self.prefix, have=set())

    def test_not_a_deb(self):
        bad = os.path.join(self.tmp, "bad.deb")
        write(bad, "not an archive")
        with mock.patch.object(device_deps.shutil, "which", lambda name, **kw: None):
            with self.assertRaisesRegex(device_deps.DepsError, "not a .deb"):
                device_deps.extract_deb(bad, self.prefix)


class FindGpuLibs(unittest.TestCase):
    """A fake machine: a toolkit folder, system folders and a site-packages with the nvidia-*
    wheels' layout (only versioned libraries, as pip installs them)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="device-deps-gpu-test-")
        self.site = os.path.join(self.tmp, "site-packages")
        nv = os.path.join(self.site, "nvidia")
        write(os.path.join(nv, "cudnn/include/cudnn.h"), "#include <cudnn_version.h>\n")
        write(os.path.join(nv, "cudnn/include/cudnn_version.h"),
              "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 19\n#define CUDNN_PATCHLEVEL 0\n")
        write(os.path.join(nv, "cudnn/lib/libcudnn.so.9"))
        write(os.path.join(nv, "cudnn/lib/libcudnn_ops.so.9"))
        write(os.path.join(nv, "nccl/include/nccl.h"),
              "#define NCCL_MAJOR 2\n#define NCCL_MINOR 28\n#define NCCL_PATCH 9\n")
        write(os.path.join(nv, "nccl/lib/libnccl.so.2"))
        cu13 = os.path.join(nv, "cu13")
        write(os.path.join(cu13, "bin/nvcc"), "#!/bin/sh\n", 0o755)
        write(os.path.join(cu13, "include/cuda_runtime_api.h"), "#define CUDART_VERSION 13000\n")
        write(os.path.join(cu13, "include/cublas_v2.h"))
        write(os.path.join(cu13, "include/cublas_api.h"),
              "#define CUBLAS_VER_MAJOR 13\n#define CUBLAS_VER_MINOR 1\n"
              "#define CUBLAS_VER_PATCH 0\n")
        write(os.path.join(cu13, "lib/libcublas.so.13"))
        write(os.path.join(cu13, "lib/libcublasLt.so.13"))
        write(os.path.join(cu13, "lib/libcudart.so.13"))
        # A toolkit installed the usual way: unversioned links, cuBLAS, no cuDNN / NCCL.
        self.toolkit = os.path.join(self.tmp, "cuda-13.0")
        write(os.path.join(self.toolkit, "bin/nvcc"), "#!/bin/sh\n", 0o755)
        write(os.path.join(self.toolkit, "bin/compute-sanitizer"), "#!/bin/sh\n", 0o755)
        write(os.path.join(self.toolkit, "include/cuda_runtime_api.h"),
              "#define CUDART_VERSION 13000\n")
        write(os.path.join(self.toolkit, "include/cublas_v2.h"))
        write(os.path.join(self.toolkit, "include/cublas_api.h"),
              "#define CUBLAS_VER_MAJOR 13\n#define CUBLAS_VER_MINOR 0\n"
              "#define CUBLAS_VER_PATCH 2\n")
        for lib in ("libcublas.so", "libcublasLt.so", "libcudart.so"):
            write(os.path.join(self.toolkit, "lib64", lib))
        self.system = os.path.join(self.tmp, "usr")
        os.makedirs(self.system)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def find(self, environ, **kw):
        kw.setdefault("system_roots", [self.system])
        kw.setdefault("cuda_roots", [])
        kw.setdefault("sanitizer_globs", [])
        return device_deps.find_gpu_libs(environ=environ, site_dirs=[self.site], **kw)

    def test_toolkit_first_then_the_wheels(self):
        found = self.find({"PATH": "", "CUDA_HOME": self.toolkit})
        self.assertEqual(found["nvcc"], os.path.join(self.toolkit, "bin/nvcc"))
        self.assertEqual(found["cuda_version"], "13.0")
        self.assertEqual(found["cublas"]["where"], "toolkit")
        self.assertEqual(found["cublas"]["version"], "13.0.2")
        cudnn, nccl = found["cudnn"], found["nccl"]
        self.assertTrue(cudnn["where"].startswith("wheel"))
        self.assertEqual(cudnn["version"], "9.19.0")
        self.assertEqual(cudnn["library"],
                         os.path.join(self.site, "nvidia/cudnn/lib/libcudnn.so.9"))
        self.assertEqual(nccl["version"], "2.28.9")
        args = found["cmake_args"]
        self.assertIn(f"-DCUDNN_LIBRARY={cudnn['library']}", args)
        self.assertIn(f"-DCUDNN_INCLUDE_DIR={self.site}/nvidia/cudnn/include", args)
        self.assertIn(f"-DELMO_NCCL_LIBRARY={self.site}/nvidia/nccl/lib/libnccl.so.2", args)
        self.assertIn(f"-DELMO_NCCL_INCLUDE_DIR={self.site}/nvidia/nccl/include", args)
        # The toolkit has unversioned cuBLAS / cudart: FindCUDAToolkit needs no help.
        self.assertFalse([x for x in args if x.startswith(("-DCUDA_cublas", "-DCUDA_CUDART"))])
        self.assertEqual(found["compute_sanitizer"],
                         os.path.join(self.toolkit, "bin/compute-sanitizer"))
        self.assertEqual(found["notes"], [])

    def test_toolkit_from_the_wheel_only(self):
        found = self.find({"PATH": ""})
        cu13 = os.path.realpath(os.path.join(self.site, "nvidia/cu13"))
        self.assertEqual(found["toolkit_root"], cu13)
        self.assertEqual(found["cublas"]["where"], "toolkit")
        self.assertTrue(found["cublas"]["versioned_only"])
        args = found["cmake_args"]
        self.assertIn(f"-DCUDA_cublas_LIBRARY={cu13}/lib/libcublas.so.13", args)
        self.assertIn(f"-DCUDA_cublasLt_LIBRARY={cu13}/lib/libcublasLt.so.13", args)
        self.assertIn(f"-DCUDA_CUDART={cu13}/lib/libcudart.so.13", args)
        self.assertIsNone(found["compute_sanitizer"])

    def test_system_folders_before_the_wheels(self):
        write(os.path.join(self.system, "include/x86_64-linux-gnu/cudnn.h"))
        write(os.path.join(self.system, "include/x86_64-linux-gnu/cudnn_version.h"),
              "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 10\n#define CUDNN_PATCHLEVEL 1\n")
        write(os.path.join(self.system, "lib/x86_64-linux-gnu/libcudnn.so"))
        found = self.find({"PATH": "", "CUDA_HOME": self.toolkit})
        self.assertEqual(found["cudnn"]["where"], "system")
        self.assertEqual(found["cudnn"]["version"], "9.10.1")
        self.assertEqual(found["cudnn"]["library"],
                         os.path.join(self.system, "lib/x86_64-linux-gnu/libcudnn.so"))

    def test_missing_libraries_are_named(self):
        shutil.rmtree(os.path.join(self.site, "nvidia/nccl"))
        shutil.rmtree(os.path.join(self.site, "nvidia/cudnn"))
        found = self.find({"PATH": "", "CUDA_HOME": self.toolkit})
        self.assertFalse(found["nccl"]["found"])
        self.assertFalse(found["cudnn"]["found"])
        notes = " ".join(found["notes"])
        self.assertIn("NCCL not found", notes)
        self.assertIn("bench_lstmp", notes)
        self.assertFalse([x for x in found["cmake_args"] if "NCCL" in x or "CUDNN" in x])
        lines = device_deps.describe_gpu_libs(found)
        self.assertIn("nccl: NOT FOUND", lines)

    def test_no_nvcc_anywhere(self):
        shutil.rmtree(os.path.join(self.site, "nvidia/cu13"))
        found = self.find({"PATH": ""})
        self.assertIsNone(found["nvcc"])
        self.assertIn("nvcc not found", " ".join(found["notes"]))

    def test_python_site_dirs_lists_folders_with_nvidia(self):
        # The running interpreter, with PYTHONPATH pointing at the fake site-packages.
        with mock.patch.dict(os.environ, {"PYTHONPATH": self.site}):
            self.assertIn(self.site, device_deps.python_site_dirs(sys.executable))
        self.assertEqual(device_deps.python_site_dirs("/nonexistent/python"), [])

    def test_cli_exit_code_says_whether_the_build_can_work(self):
        env = {"PATH": "", "CUDA_HOME": self.toolkit}
        with mock.patch.dict(os.environ, env, clear=True), \
                mock.patch.object(device_deps, "default_cuda_roots", lambda: []):
            argv = ["find-gpu-libs", "--python", "/nonexistent", "--site", self.site,
                    "--system-root", self.system]
            with contextlib.redirect_stdout(io.StringIO()) as out:
                self.assertEqual(device_deps.main(argv), 0)
            self.assertEqual(json.loads(out.getvalue())["nccl"]["version"], "2.28.9")
            shutil.rmtree(os.path.join(self.site, "nvidia/nccl"))
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(device_deps.main(argv), 1)


class Bare(unittest.TestCase):
    def test_base_packages_are_never_hidden(self):
        installed = {"apt": pkg("libzstd1, libgnutls30 | libssl3"), "libzstd1": pkg(),
                     "libgnutls30": pkg("libgmp10"), "libgmp10": pkg(), "libssl3": pkg(),
                     "libhdf5-103-1": pkg("libzstd1")}
        got = device_deps.packages_to_hide(
            ["libzstd1", "libgmp10", "libssl3", "libhdf5-103-1"], installed)
        self.assertEqual(got, ["libhdf5-103-1", "libssl3"])

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare") and
                         shutil.which("dpkg") and
                         subprocess.run(["dpkg-query", "-W", "libgtest-dev"],
                                        capture_output=True).returncode == 0,
                         "needs root, unshare, and libgtest-dev installed")
    def test_hidden_inside_visible_outside(self):
        tmp = tempfile.mkdtemp(prefix="device-deps-bare-test-")
        try:
            with open(os.path.join(tmp, "manifest.json"), "w") as f:
                json.dump({"packages": {"libgtest-dev": "1"}}, f)
            header = "/usr/include/gtest/gtest.h"
            with contextlib.redirect_stderr(io.StringIO()):
                rc = device_deps.bare(tmp, ["sh", "-c",
                                            f"test ! -e {header} && test -e /usr/bin/sh"])
            self.assertEqual(rc, 0)
            self.assertTrue(os.path.exists(header))  # only inside the namespace
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class Relocate(unittest.TestCase):
    def test_paths_after_separators_only(self):
        p = "/opt/deps"
        self.assertEqual(device_deps.relocate_text("prefix=/usr\n", p), "prefix=/opt/deps/usr\n")
        self.assertEqual(device_deps.relocate_text("Libs: -L/usr/lib -lfoo", p),
                         "Libs: -L/opt/deps/usr/lib -lfoo")
        self.assertEqual(device_deps.relocate_text('x;/usr/include;"/usr/share/a"', p),
                         'x;/opt/deps/usr/include;"/opt/deps/usr/share/a"')
        self.assertEqual(device_deps.relocate_text("/usr/local/lib /home/usr/lib", p),
                         "/usr/local/lib /home/usr/lib")


if __name__ == "__main__":
    unittest.main()

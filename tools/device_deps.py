#!/usr/bin/env python3
"""Bring elmo_fast's build dependencies to a GPU machine that has the CUDA toolkit, CMake, a C++
compiler and PyTorch, but no package registry and none of our Debian libraries; and find cuBLAS,
cuDNN and NCCL there, in the toolkit or in PyTorch's nvidia-* wheels.

Here (a Debian 12 machine where ./setup.sh ran, with apt), once:
    python3 tools/device_deps.py fetch            # .debs + test data into .devdeps/ (ignored)
There (bench/gpu_check.py does this itself; by hand):
    python3 tools/device_deps.py unpack --prefix /tmp/elmo-deps   # prints the environment
    python3 tools/device_deps.py find-gpu-libs                    # cuBLAS / cuDNN / NCCL, as JSON

fetch    downloads (apt-get download) the -dev packages setup.sh installs, pkgconf, and every
         library package they depend on (resolved through what is installed here), except the
         C/C++ runtime every compiler machine has (libc6, libstdc++6, libgcc-s1, libgomp1); and
         copies the shared data the GPU checks read (the 1B-word sample shards, the ELMo
         fixtures) into .devdeps/data. About 25 MB in all; it prints the size.
unpack   extracts every .deb under PREFIX (never into /), rewrites the absolute /usr paths of the
         packages' CMake and pkg-config files to PREFIX/usr, and links into PREFIX/overlay only
         the shared libraries whose soname the machine does not already provide: that folder
         alone goes on LD_LIBRARY_PATH, so a library the machine has (libz, libssl, ...) is never
         shadowed by an older Debian copy under PyTorch. Writes PREFIX/env.sh and
         PREFIX/env.json (CMAKE_PREFIX_PATH, PKG_CONFIG_PATH, PKG_CONFIG when the machine has no
         pkg-config, CPATH, LIBRARY_PATH, LD_LIBRARY_PATH, UCX_MODULE_DIR).
find-gpu-libs  looks for nvcc (PATH, CUDA_HOME, /usr/local/cuda, the nvidia/cu13 wheel) and for
         cuBLAS, cuDNN and NCCL (header + library) in the toolkit, then the system folders, then
         the nvidia/* folders of every site-packages of --python (the PyTorch wheels: only
         versioned libraries there, e.g. libcudnn.so.9, which CMake links by full path). Prints
         what it found (versions from the headers) and the CMake cache variables that point the
         build at it: CUDNN_INCLUDE_DIR / CUDNN_LIBRARY (bench/CMakeLists.txt),
         ELMO_NCCL_INCLUDE_DIR / ELMO_NCCL_LIBRARY (comm/CMakeLists.txt), and CUDA_CUDART /
         CUDA_cublas_LIBRARY / CUDA_cublasLt_LIBRARY (FindCUDAToolkit) where the toolkit has only
         versioned files.
size     what a device call would carry: tracked and untracked-not-ignored files plus .devdeps.
bare -- COMMAND...
         here, as root: runs COMMAND where the machine looks bare, in a private mount namespace
         whose /usr hides (overlayfs whiteouts) every file of the fetched packages that a minimal
         Debian/Ubuntu base (apt, dpkg, coreutils, bash, tar, gzip and what they need) would not
         have: checks that the GPU check builds and runs from .devdeps alone.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(REPO, ".devdeps")
# What the device tool carries at most (the working tree plus carried folders).
CARRY_LIMIT = 64 * 2**20

# The -dev packages of setup.sh, pkg-config's implementation, and the -dev packages their CMake
# and pkg-config files point at (gloo: hiredis, ibverbs; hdf5: libaec).
BUILD_PACKAGES = [
    "libopenblas-dev", "libopenblas-pthread-dev", "libcli11-dev", "libtomlplusplus-dev",
    "libhdf5-dev", "libaec-dev", "libucx-dev", "libgloo-dev", "libhiredis-dev", "libibverbs-dev",
    "libgtest-dev", "libgmock-dev", "nlohmann-json3-dev", "pkgconf", "pkgconf-bin",
]
# Never fetched: the C/C++ runtime and toolchain pieces every machine with a compiler has (a
# Debian copy of these would not be used anyway, and must never shadow the machine's own).
NEVER_FETCH = {
    "libc6", "libc6-dev", "libc-dev-bin", "linux-libc-dev", "libcrypt1", "libcrypt-dev",
    "libgcc-s1", "libstdc++6", "libgomp1", "libquadmath0-dbg", "gcc-12-base", "libnsl-dev",
    "libtirpc-dev",
}
# Shared data the GPU checks read (tests through ELMO_DATA_DIR; gpu_check's train stage).
DATA_SUBDIRS = ["lm1b-sample", "elmo-fixtures"]


def log(message):
    print(f"device_deps: {message}", file=sys.stderr, flush=True)


class DepsError(Exception):
    """A failure with a message that says what to do."""


# ----------------------------------------------------------------------------------------------
# fetch (here)
# ----------------------------------------------------------------------------------------------

def installed_packages():
    """{package: {"depends", "pre", "version"}} of every package installed here (dpkg-query)."""
    fmt = "${Package}\\t${Status}\\t${Depends}\\t${Pre-Depends}\\t${Version}\\n"
    proc = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DepsError(f"dpkg-query failed ({proc.stderr.strip()}): fetch needs a Debian machine")
    out = {}
    for line in proc.stdout.splitlines():
        name, status, depends, pre, version = (line.split("\t") + [""] * 5)[:5]
        if "install ok installed" in status:
            out[name] = {"depends": depends, "pre": pre, "version": version}
    return out


def _parse_depends(text):
    """'a (>= 1) | b, c' -> [['a', 'b'], ['c']] (architecture qualifiers dropped)."""
    groups = []
    for group in text.split(","):
        names = [re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alt).strip().split(":")[0]
                 for alt in group.split("|")]
        names = [n for n in names if n]
        if names:
            groups.append(names)
    return groups


def installed_dependencies(name, installed):
    """The packages `name` depends on (Depends and Pre-Depends), each alternative resolved to
    the first one installed here; alternatives none of which is installed are left out."""
    fields = installed[name]
    for group in _parse_depends(fields["depends"] + "," + fields["pre"]):
        pick = next((alt for alt in group if alt in installed), None)
        if pick is not None:
            yield pick


def package_closure(roots, installed):
    """The packages to fetch: `roots` and, recursively, the library packages (lib*, not -dev,
    not -doc) they depend on, each alternative resolved to the one installed here; NEVER_FETCH
    excluded. `installed` is installed_packages()'s map. Returns {package: version}."""
    chosen, stack = {}, list(roots)
    while stack:
        name = stack.pop()
        if name in chosen or name in NEVER_FETCH:
            continue
        if name not in installed:
            raise DepsError(f"{name} is not installed here: run ./setup.sh first (fetch takes the "
                            "versions this machine builds against)")
        chosen[name] = installed[name]["version"]
        for pick in installed_dependencies(name, installed):
            is_library = pick.startswith("lib") and not pick.endswith(("-dev", "-doc", "-dbg"))
            if is_library or pick in roots:
                stack.append(pick)
    return chosen


def copy_tree(src, dest):
    """Copies src to dest (replaced), contents only: the copies are writable even where the
    shared data is read-only."""
    shutil.rmtree(dest, ignore_errors=True)
    for root, dirs, files in os.walk(src):
        out = os.path.join(dest, os.path.relpath(root, src))
        os.makedirs(out, exist_ok=True)
        for name in files:
            shutil.copyfile(os.path.join(root, name), os.path.join(out, name))


def fetch(dest, data_src, packages=None):
    debs = os.path.join(dest, "debs")
    os.makedirs(debs, exist_ok=True)
    wanted = package_closure(packages or BUILD_PACKAGES, installed_packages())
    lists = "/var/lib/apt/lists"
    if not (os.path.isdir(lists) and any(n.endswith("_Packages") for n in os.listdir(lists))):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
    for old in glob.glob(os.path.join(debs, "*.deb")):
        os.remove(old)
    # The versions installed here (what the CPU build and its tests ran against), in one call;
    # where the archive no longer has one (a security update since), the current candidate of
    # the same release. apt-get names each version it cannot find; those are retried unpinned.
    specs = {name: f"{name}={version}" for name, version in sorted(wanted.items())}
    for _ in range(3):
        proc = subprocess.run(["apt-get", "download", "-q"] + list(specs.values()), cwd=debs,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            break
        unpinned = re.findall(r"version '[^']*' of '([^':]+)", proc.stderr)
        if not unpinned:
            raise DepsError(f"apt-get download failed:\n{proc.stderr.strip()}")
        for name in unpinned:
            log(f"{name}: {wanted[name]} is no longer in the archive; taking its candidate")
            specs[name] = name
    else:
        raise DepsError(f"apt-get download failed:\n{proc.stderr.strip()}")
    copied = []
    data_dest = os.path.join(dest, "data")
    for sub in DATA_SUBDIRS:
        src = os.path.join(data_src, sub)
        if not os.path.isdir(src):
            log(f"{src} not found: the GPU checks that read it will skip (gpu_check --data)")
            continue
        copy_tree(src, os.path.join(data_dest, sub))
        copied.append(sub)
    manifest = {"packages": wanted, "data": copied}
    with open(os.path.join(dest, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    log(f"{len(wanted)} packages in {debs}, data: {', '.join(copied) or 'none'}; "
        f"{tree_bytes(dest) / 2**20:.1f} MiB in {dest}")


# ----------------------------------------------------------------------------------------------
# unpack (there)
# ----------------------------------------------------------------------------------------------

def _ar_members(path):
    """(name, bytes) of each member of an ar archive (the .deb container)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DepsError(f"{path}: not a .deb (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                return
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data = f.read(size)
            if size % 2:
                f.read(1)
            yield name, data


def extract_deb(path, prefix):
    """Extracts a .deb's files under prefix: dpkg-deb when the machine has it, else Python's
    ar + tarfile (data.tar.xz / .gz / .bz2 / uncompressed; not .zst)."""
    if shutil.which("dpkg-deb"):
        proc = subprocess.run(["dpkg-deb", "-x", path, prefix], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        log(f"dpkg-deb -x {os.path.basename(path)} failed ({proc.stderr.strip()}); "
            "extracting it with Python")
    import io
    for name, data in _ar_members(path):
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise DepsError(f"{path}: zstd data and no dpkg-deb to read it")
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                kwargs = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
                tar.extractall(prefix, **kwargs)
            return
    raise DepsError(f"{path}: no data.tar member")


_USR_PATH = re.compile(r"""(^|[\s"'=(;:,]|-I|-L)/usr/(lib|include|share|bin)\b""", re.M)


def relocate_text(text, prefix):
    """Absolute /usr/{lib,include,share,bin} paths (after a separator) -> PREFIX/usr/..., and
    pkg-config's prefix=/usr."""
    text = re.sub(r"^prefix=/usr/?$", f"prefix={prefix}/usr", text, flags=re.M)
    text = _USR_PATH.sub(lambda m: f"{m.group(1)}{prefix}/usr/{m.group(2)}", text)
    return text.replace('"/usr"', f'"{prefix}/usr"')


def relocate_files(prefix):
    """Rewrites the packages' CMake and pkg-config files and their absolute symlinks."""
    changed = 0
    for root, dirs, files in (e for d in ("usr", "lib") for e in os.walk(os.path.join(prefix, d))):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                target = os.readlink(path)
                if target.startswith(("/usr/", "/lib/")) and os.path.lexists(prefix + target):
                    os.remove(path)
                    os.symlink(prefix + target, path)
                continue
            if not name.endswith((".cmake", ".pc")):
                continue
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
            new = relocate_text(text, prefix)
            if new != text:
                with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(new)
                changed += 1
    return changed


def system_sonames():
    """Shared-library names the dynamic loader finds on this machine without help: ldconfig's
    cache entries whose file exists, plus the files of the default library folders."""
    names = set()
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and "x86-64" in m.group(2) and os.path.exists(m.group(3)):
            names.add(m.group(1))
    for folder in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"):
        if os.path.isdir(folder):
            names.update(n for n in os.listdir(folder) if os.path.exists(os.path.join(folder, n)))
    return names


def build_overlay(prefix, have):
    """PREFIX/overlay: a link to each shared library of the packages (lib*.so.N...) whose name
    `have` (a set of sonames the machine has) lacks. Returns the linked names."""
    overlay = os.path.join(prefix, "overlay")
    shutil.rmtree(overlay, ignore_errors=True)
    os.makedirs(overlay)
    linked = []
    # Debian 12 packages still put some libraries in /lib (merged /usr happens at install).
    walks = [os.walk(os.path.join(prefix, *d)) for d in (("usr", "lib"), ("lib",))]
    for root, dirs, files in (entry for walk in walks for entry in walk):
        dirs[:] = [d for d in dirs if d not in ("cmake", "pkgconfig", "ucx", "debug")]
        for name in sorted(files):
            if not re.match(r"lib.*\.so\.\d", name) or name in have:
                continue
            link = os.path.join(overlay, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join(root, name), link)
                linked.append(name)
    return sorted(linked)


def _prepend(value, current):
    return value + (os.pathsep + current if current else "")


def unpack(deps_dir, prefix, have=None, environ=None):
    """Extracts deps_dir/debs/*.deb under prefix and returns the environment to build and run
    with (only the variables it sets, each prepended to `environ`'s value)."""
    environ = os.environ if environ is None else environ
    prefix = os.path.abspath(prefix)
    if prefix in ("/", "/usr", "/usr/local"):
        raise DepsError(f"--prefix {prefix}: unpack under a folder of its own, never into /")
    debs = sorted(glob.glob(os.path.join(deps_dir, "debs", "*.deb")))
    if not debs:
        raise DepsError(f"no .deb files in {deps_dir}/debs: run `python3 tools/device_deps.py "
                        "fetch` on a machine with apt, and carry the folder")
    # The same .debs already unpacked here (a second run on the same machine): keep them.
    stamp = [[os.path.basename(d), os.path.getsize(d)] for d in debs]
    try:
        with open(os.path.join(prefix, "env.json"), encoding="utf-8") as f:
            reuse = json.load(f).get("stamp") == stamp
    except (OSError, ValueError):
        reuse = False
    if reuse:
        relocated = 0
    else:
        if os.path.isdir(prefix) and os.listdir(prefix):
            if not os.path.isfile(os.path.join(prefix, "env.json")):
                raise DepsError(f"--prefix {prefix} is not empty and was not made by "
                                "device_deps (no env.json): name a new folder")
            shutil.rmtree(prefix)  # an earlier unpack of other .debs
        os.makedirs(prefix, exist_ok=True)
        for deb in debs:
            extract_deb(deb, prefix)
        relocated = relocate_files(prefix)
    usr = os.path.join(prefix, "usr")
    linked = build_overlay(prefix, system_sonames() if have is None else have)
    pc_dirs = sorted({os.path.dirname(p) for p in
                      glob.glob(os.path.join(usr, "**", "pkgconfig", "*.pc"), recursive=True)})
    env = {
        "CMAKE_PREFIX_PATH": _prepend(usr, environ.get("CMAKE_PREFIX_PATH", "")),
        "PKG_CONFIG_PATH": _prepend(os.pathsep.join(pc_dirs), environ.get("PKG_CONFIG_PATH", "")),
        "CPATH": _prepend(os.pathsep.join(d for d in (os.path.join(usr, "include"),
                                                       os.path.join(usr, "include/hdf5/serial"))
                                          if os.path.isdir(d)), environ.get("CPATH", "")),
        "LIBRARY_PATH": _prepend(os.pathsep.join([os.path.join(usr, "lib/x86_64-linux-gnu"),
                                                  os.path.join(usr, "lib"),
                                                  os.path.join(prefix, "lib/x86_64-linux-gnu")]),
                                 environ.get("LIBRARY_PATH", "")),
        "LD_LIBRARY_PATH": _prepend(os.path.join(prefix, "overlay"),
                                    environ.get("LD_LIBRARY_PATH", "")),
    }
    pkgconf = os.path.join(usr, "bin", "pkgconf")
    if not shutil.which("pkg-config", path=environ.get("PATH")) and os.path.exists(pkgconf):
        env["PKG_CONFIG"] = pkgconf  # CMake's FindPkgConfig reads it
    ucx = os.path.join(usr, "lib/x86_64-linux-gnu/ucx")
    if "libucs.so.0" in linked and os.path.isdir(ucx):
        env["UCX_MODULE_DIR"] = ucx
    info = {"prefix": prefix, "debs": len(debs), "reused": reuse, "relocated_files": relocated,
            "overlay": linked, "env": env, "stamp": stamp}
    with open(os.path.join(prefix, "env.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    with open(os.path.join(prefix, "env.sh"), "w", encoding="utf-8") as f:
        for key, value in env.items():
            f.write(f"export {key}='{value}'\n")
    return info


# ----------------------------------------------------------------------------------------------
# find-gpu-libs (there)
# ----------------------------------------------------------------------------------------------

def python_site_dirs(python):
    """site-packages folders of `python` (its sys.path entries that exist)."""
    code = ("import json, site, sys; d = list(sys.path)\n"
            "try: d += site.getsitepackages() + [site.getusersitepackages()]\n"
            "except Exception: pass\n"
            "print(json.dumps(d))")
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        dirs = json.loads(proc.stdout) if proc.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        dirs = []
    seen, out = set(), []
    for d in dirs:
        if d and os.path.isdir(os.path.join(d, "nvidia")) and d not in seen:
            seen.add(d)
            out.append(d)
    return out


def default_cuda_roots():
    """Where a CUDA toolkit usually is, newest first after /usr/local/cuda."""
    return ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)


def find_nvcc(environ, site_dirs, cuda_roots):
    candidates = [shutil.which("nvcc", path=environ.get("PATH", ""))]
    for var in ("CUDA_HOME", "CUDA_PATH", "CUDAToolkit_ROOT"):
        if environ.get(var):
            candidates.append(os.path.join(environ[var], "bin", "nvcc"))
    candidates += [os.path.join(r, "bin", "nvcc") for r in cuda_roots]
    candidates += [os.path.join(s, "nvidia", "cu13", "bin", "nvcc") for s in site_dirs]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


def _header_version(path, names):
    """'9.19.0' from #define NAME value lines of a header (the first file that has them)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    parts = []
    for name in names:
        m = re.search(rf"#define\s+{name}\s+(\d+)", text)
        if not m:
            return None
        parts.append(m.group(1))
    return ".".join(parts)


# name -> (header, library stem, version header, version macros)
GPU_LIBS = {
    "cublas": ("cublas_v2.h", "cublas", "cublas_api.h",
               ("CUBLAS_VER_MAJOR", "CUBLAS_VER_MINOR", "CUBLAS_VER_PATCH")),
    "cudnn": ("cudnn.h", "cudnn", "cudnn_version.h",
              ("CUDNN_MAJOR", "CUDNN_MINOR", "CUDNN_PATCHLEVEL")),
    "nccl": ("nccl.h", "nccl", "nccl.h", ("NCCL_MAJOR", "NCCL_MINOR", "NCCL_PATCH")),
}
_INCLUDE_SUFFIXES = ("include", "include/x86_64-linux-gnu", "targets/x86_64-linux/include")
_LIB_SUFFIXES = ("lib64", "lib", "lib/x86_64-linux-gnu", "targets/x86_64-linux/lib")


def _find_lib_file(root, stem):
    """(library file, versioned only?) under root: lib<stem>.so, else the newest
    lib<stem>.so.N."""
    for suffix in _LIB_SUFFIXES:
        folder = os.path.join(root, suffix)
        plain = os.path.join(folder, f"lib{stem}.so")
        if os.path.exists(plain):
            return plain, False
        versioned = [p for p in glob.glob(os.path.join(folder, f"lib{stem}.so.[0-9]*"))
                     if os.path.exists(p)]
        if versioned:
            return sorted(versioned, key=lambda p: (p.count("."), p))[0], True
    return None, False


def find_gpu_lib(name, roots):
    """The first root (in order) holding both the header and the library of `name`."""
    header, stem, version_header, macros = GPU_LIBS[name]
    for where, root in roots:
        include = next((os.path.join(root, s) for s in _INCLUDE_SUFFIXES
                        if os.path.isfile(os.path.join(root, s, header))), None)
        if include is None:
            continue
        library, versioned_only = _find_lib_file(root, stem)
        if library is None:
            continue
        return {"found": True, "where": where, "root": root, "include_dir": include,
                "library": library, "versioned_only": versioned_only,
                "version": _header_version(os.path.join(include, version_header), macros)}
    return {"found": False, "searched": [root for _, root in roots]}


def find_gpu_libs(environ=None, site_dirs=(), system_roots=("/usr", "/usr/local"),
                  cuda_roots=None, sanitizer_globs=None):
    """nvcc, the CUDA toolkit root, cuBLAS, cuDNN, NCCL and compute-sanitizer, with the CMake
    cache variables and notes (see the module doc). Only reads the file system; a test passes
    its own environ, roots and globs."""
    environ = os.environ if environ is None else environ
    cuda_roots = default_cuda_roots() if cuda_roots is None else list(cuda_roots)
    site_dirs = list(site_dirs)
    out = {"site_dirs": site_dirs, "cmake_args": [], "notes": [], "cpath": []}
    nvcc = find_nvcc(environ, site_dirs, cuda_roots)
    out["nvcc"] = nvcc
    toolkit = os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None
    out["toolkit_root"] = toolkit
    if nvcc:
        out["cmake_args"] += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCUDAToolkit_ROOT={toolkit}"]
        v = _header_version(os.path.join(toolkit, "include", "cuda_runtime_api.h"),
                            ("CUDART_VERSION",))
        out["cuda_version"] = f"{int(v) // 1000}.{int(v) % 1000 // 10}" if v else None
    else:
        out["notes"].append("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda, nvidia/cu13 "
                            "wheel): install the CUDA toolkit or put nvcc on PATH")
    toolkit_roots = [("toolkit", toolkit)] if toolkit else []
    system = [("system", r) for r in system_roots if r != toolkit]

    def wheel_roots(*subdirs):
        return [(f"wheel {s}/nvidia/{d}", os.path.join(s, "nvidia", d))
                for s in site_dirs for d in subdirs]

    out["cublas"] = find_gpu_lib("cublas", toolkit_roots + system + wheel_roots("cu13", "cublas"))
    out["cudnn"] = find_gpu_lib("cudnn", toolkit_roots + system + wheel_roots("cudnn"))
    out["nccl"] = find_gpu_lib("nccl", toolkit_roots + system + wheel_roots("nccl"))

    cudnn, nccl, cublas = out["cudnn"], out["nccl"], out["cublas"]
    if cudnn["found"]:
        out["cmake_args"] += [f"-DCUDNN_INCLUDE_DIR={cudnn['include_dir']}",
                              f"-DCUDNN_LIBRARY={cudnn['library']}"]
    else:
        out["notes"].append("cuDNN not found: bench_lstmp (its reference) is not built")
    if nccl["found"]:
        out["cmake_args"] += [f"-DELMO_NCCL_INCLUDE_DIR={nccl['include_dir']}",
                              f"-DELMO_NCCL_LIBRARY={nccl['library']}"]
    else:
        out["notes"].append("NCCL not found: the build (comm/) needs nccl.h and libnccl")
    if not cublas["found"]:
        out["notes"].append("cuBLAS not found: the build (runtime/) needs it")
    elif cublas["where"] != "toolkit" or cublas["versioned_only"]:
        # FindCUDAToolkit looks for libcublas.so / libcublasLt.so under the toolkit only.
        lt, _ = _find_lib_file(cublas["root"], "cublasLt")
        out["cmake_args"].append(f"-DCUDA_cublas_LIBRARY={cublas['library']}")
        if lt:
            out["cmake_args"].append(f"-DCUDA_cublasLt_LIBRARY={lt}")
        if cublas["where"] != "toolkit":
            out["cpath"].append(cublas["include_dir"])
    if toolkit:
        cudart, versioned_only = _find_lib_file(toolkit, "cudart")
        if cudart and versioned_only:
            out["cmake_args"].append(f"-DCUDA_CUDART={cudart}")
    if sanitizer_globs is None:
        sanitizer_globs = ["/opt/nvidia/*/compute-sanitizer*/compute-sanitizer",
                           "/opt/nvidia/**/compute-sanitizer"]
    out["compute_sanitizer"] = find_compute_sanitizer(
        environ, ([toolkit] if toolkit else []) + cuda_roots +
        [os.path.join(s, "nvidia", "cu13") for s in site_dirs], sanitizer_globs)
    return out


def find_compute_sanitizer(environ, roots, globs):
    """compute-sanitizer on PATH, in a toolkit's bin/ or compute-sanitizer/, or matching one of
    `globs` (Nsight installs under /opt/nvidia)."""
    candidates = [shutil.which("compute-sanitizer", path=environ.get("PATH", ""))]
    for r in roots:
        candidates += [os.path.join(r, "bin", "compute-sanitizer"),
                       os.path.join(r, "compute-sanitizer", "compute-sanitizer")]
    for pattern in globs:
        candidates += sorted(glob.glob(pattern, recursive=True))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


def describe_gpu_libs(found):
    """One line per library for logs and the summary."""
    lines = [f"nvcc: {found['nvcc'] or 'NOT FOUND'}"
             + (f" (CUDA {found.get('cuda_version')})" if found.get("cuda_version") else "")]
    for name in ("cublas", "cudnn", "nccl"):
        r = found[name]
        if r["found"]:
            lines.append(f"{name}: {r.get('version') or '?'} from {r['where']} "
                         f"({r['library']})")
        else:
            lines.append(f"{name}: NOT FOUND")
    lines.append(f"compute-sanitizer: {found['compute_sanitizer'] or 'NOT FOUND'}")
    return lines


# ----------------------------------------------------------------------------------------------
# size (here)
# ----------------------------------------------------------------------------------------------

def tree_bytes(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def travelling_bytes(repo, carried):
    """Bytes of the files git would send (tracked + untracked-not-ignored) plus the carried
    folders."""
    proc = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others",
                           "--exclude-standard"], capture_output=True)
    if proc.returncode != 0:
        raise DepsError(f"git ls-files failed in {repo}: {proc.stderr.decode().strip()}")
    tree = 0
    for rel in proc.stdout.decode().split("\0"):
        p = os.path.join(repo, rel)
        if rel and os.path.isfile(p) and not os.path.islink(p):
            tree += os.path.getsize(p)
    return tree, {c: tree_bytes(os.path.join(repo, c)) for c in carried}


# ----------------------------------------------------------------------------------------------
# bare (here, as root)
# ----------------------------------------------------------------------------------------------

BASE_PACKAGES = ["apt", "dpkg", "coreutils", "bash", "tar", "gzip", "libc6", "libstdc++6",
                 "libgcc-s1"]


def packages_to_hide(fetched, installed):
    """The fetched packages a minimal base system would lack: those outside the full dependency
    closure of BASE_PACKAGES."""
    base, stack = set(), list(BASE_PACKAGES)
    while stack:
        name = stack.pop()
        if name in base or name not in installed:
            continue
        base.add(name)
        stack += installed_dependencies(name, installed)
    return sorted(p for p in fetched if p not in base)


def bare(deps_dir, command):
    """Runs `command` with the files of packages_to_hide() hidden from /usr (see the doc)."""
    import stat
    import tempfile
    with open(os.path.join(deps_dir, "manifest.json"), encoding="utf-8") as f:
        fetched = json.load(f)["packages"]
    hide = packages_to_hide(fetched, installed_packages())
    listed = subprocess.run(["dpkg", "-L"] + hide, capture_output=True, text=True).stdout
    work = tempfile.mkdtemp(prefix="device-deps-bare-")
    upper, scratch = os.path.join(work, "upper"), os.path.join(work, "work")
    os.makedirs(upper)
    os.makedirs(scratch)
    hidden = 0
    for path in sorted(set(listed.splitlines())):
        # Merged /usr: /lib, /bin and /lib64 are /usr's.
        for old, new in (("/lib/", "/usr/lib/"), ("/lib64/", "/usr/lib64/"),
                         ("/bin/", "/usr/bin/")):
            if path.startswith(old):
                path = new + path[len(old):]
        if not path.startswith("/usr/") or (os.path.isdir(path) and not os.path.islink(path)):
            continue
        if not os.path.lexists(path):
            continue
        white = os.path.join(upper, path[len("/usr/"):])
        os.makedirs(os.path.dirname(white), exist_ok=True)
        if not os.path.lexists(white):
            os.mknod(white, stat.S_IFCHR | 0o600, os.makedev(0, 0))  # an overlayfs whiteout
            hidden += 1
    log(f"bare: {hidden} files of {len(hide)} packages hidden from /usr "
        f"({len(fetched) - len(hide)} fetched packages are part of any base system)")
    mount = f"mount -t overlay overlay -o lowerdir=/usr,upperdir={upper},workdir={scratch} /usr"
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           f'{mount} && exec "$@"', "sh"] + command)
    shutil.rmtree(work, ignore_errors=True)
    return proc.returncode


# ----------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="here: .debs and data into --dir")
    f.add_argument("--dir", default=DEFAULT_DIR)
    f.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"),
                   help="the shared data folder to copy lm1b-sample/ and elmo-fixtures/ from")
    u = sub.add_parser("unpack", help="there: extract under --prefix, print the environment")
    u.add_argument("--dir", default=DEFAULT_DIR)
    u.add_argument("--prefix", required=True)
    g = sub.add_parser("find-gpu-libs", help="nvcc, cuBLAS, cuDNN, NCCL, compute-sanitizer")
    g.add_argument("--python", default=sys.executable,
                   help="the interpreter whose site-packages hold the nvidia-* wheels")
    g.add_argument("--site", action="append", default=[],
                   help="another folder holding nvidia/<lib> (repeatable)")
    g.add_argument("--system-root", action="append", default=None,
                   help="system prefix searched after the toolkit (repeatable; default /usr and "
                   "/usr/local)")
    s = sub.add_parser("size", help="what a device call carries")
    s.add_argument("--carry", action="append", default=None,
                   help="carried folder, relative to the repository (default .devdeps)")
    b = sub.add_parser("bare", help="here, as root: run a command where the fetched packages "
                       "look absent")
    b.add_argument("--dir", default=DEFAULT_DIR)
    b.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    a = p.parse_args(argv)
    try:
        if a.command == "fetch":
            fetch(os.path.abspath(a.dir), os.path.abspath(a.data))
        elif a.command == "unpack":
            info = unpack(os.path.abspath(a.dir), a.prefix)
            log(f"{info['debs']} packages under {info['prefix']}, {len(info['overlay'])} "
                f"libraries the machine lacks linked in overlay/; source {info['prefix']}/env.sh")
            for key, value in info["env"].items():
                print(f"export {key}='{value}'")
        elif a.command == "find-gpu-libs":
            found = find_gpu_libs(site_dirs=a.site + python_site_dirs(a.python),
                                  system_roots=a.system_root or ("/usr", "/usr/local"))
            for line in describe_gpu_libs(found):
                log(line)
            print(json.dumps(found, indent=2))
            if not found["nvcc"] or not found["cublas"]["found"] or not found["nccl"]["found"]:
                return 1
        elif a.command == "bare":
            command = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
            if not command:
                p.error("bare: name the command to run after --")
            return bare(os.path.abspath(a.dir), command)
        elif a.command == "size":
            tree, carried = travelling_bytes(REPO, a.carry or [".devdeps"])
            total = tree + sum(carried.values())
            log(f"working tree {tree / 2**20:.1f} MiB + " + " + ".join(
                f"{c} {b / 2**20:.1f} MiB" for c, b in carried.items()) +
                f" = {total / 2**20:.1f} MiB of {CARRY_LIMIT // 2**20} MiB")
            if total > CARRY_LIMIT:
                return 1
    except DepsError as e:
        print(f"device_deps: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``mkl_fastpath`` patch: Paddle's bundled MKL on its fast path on x86-64 CPUs not made by Intel.

Both Paddle CPU wheels (2.6.2, 3.3.1) do their dygraph GEMMs in ``libmklml_intel.so`` (MKL
2019.0.5).  Its dispatcher asks ``mkl_serv_intel_cpu_true()`` whether the CPU is Intel's and, on
an AMD EPYC, answers no and runs generic SSE code: a BERT training step takes 3.3x PyTorch's on
the same CPU (issue #14; Paddle issue #75760, closed without a fix).  Two ways put MKL back on the
code path the CPU supports; this module takes the first that works:

``interpose`` (Linux)
    A one-function shared library, ``int mkl_serv_intel_cpu_true(void) { return 1; }``, loaded
    with ``RTLD_GLOBAL`` before paddle loads MKL: the dynamic linker binds MKL's call to it (what
    ``LD_PRELOAD`` would do, in-process).  MKL then picks the branch for the instruction sets it
    detects itself (AVX-512 here), so the choice stays right on any CPU.  Building the library
    needs a C compiler (``$CC``, ``cc``, ``gcc`` or ``clang``) once; it is cached in
    ``$XDG_CACHE_HOME/ofa_flexbert`` (or ``~/.cache``, else the temp folder).
``env`` (no compiler, or not Linux)
    ``MKL_DEBUG_CPU_TYPE=5`` (MKL's AVX2 branch), read by MKL when it initialises.  Set only
    when the CPU has AVX2 and FMA, since forcing the AVX2 branch elsewhere would crash with an
    illegal instruction; a value the user set is kept.

Intel CPUs, non-x86 machines and Paddle builds without MKL are left alone, and
``OFA_FLEXBERT_MKL_FASTPATH=0`` turns the patch off.  Both ways must be in place before paddle
first loads MKL, so :func:`install` runs when :mod:`patches` is imported (first thing in the CLI,
``ofa_flexbert``, the tests, the bench scripts and every data-parallel worker, which runs the
same script).  :data:`status` is the one line that says which path is in effect; the CLI logs it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Mapping, Optional

SWITCH = "OFA_FLEXBERT_MKL_FASTPATH"
SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"
ENV_VARIABLE, ENV_VALUE = "MKL_DEBUG_CPU_TYPE", "5"  # MKL 2019's AVX2 branch
MKL_LIBRARY = {"Linux": "libmklml_intel.so", "Windows": "mklml.dll"}

logger = logging.getLogger("ofa_flexbert")

status = "MKL fast path: not decided (patches.mkl_fastpath.install() has not run)"


@dataclass(frozen=True)
class Machine:
    """What decides the patch: the CPU, the OS and whether the installed paddle ships MKL."""

    system: str  # platform.system(): 'Linux', 'Windows', 'Darwin'
    arch: str  # platform.machine(): 'x86_64', 'AMD64', 'aarch64', ...
    vendor: str  # 'GenuineIntel', 'AuthenticAMD', 'HygonGenuine', ... ('' when unknown)
    avx2: bool  # the CPU has AVX2 and FMA (MKL's AVX2 branch runs)
    mkl: Optional[str]  # paddle's MKL library, None when the wheel has none
    mkl_loaded: bool  # MKL already in this process: too late for either way


@dataclass(frozen=True)
class FastPath:
    """``action`` is 'interpose', 'env' or 'none'; ``reason`` completes the log line."""

    action: str
    reason: str


def choose_fast_path(machine: Machine, environ: Mapping[str, str]) -> FastPath:
    """The way to take on ``machine`` (pure: tests feed it machines this one is not)."""
    if environ.get(SWITCH, "1").strip() == "0":
        return FastPath("none", f"off ({SWITCH}=0)")
    if machine.arch.lower() not in ("x86_64", "amd64"):
        return FastPath("none", f"not needed ({machine.arch} CPU)")
    if machine.vendor == "GenuineIntel":
        return FastPath("none", "not needed (Intel CPU: MKL takes its fast path itself)")
    if not machine.vendor:
        return FastPath("none", "left alone (CPU vendor unknown)")
    if machine.mkl is None:
        return FastPath("none", "not needed (this paddle build has no MKL)")
    if machine.mkl_loaded:
        return FastPath("none", "NOT applied: paddle had run math before ofa_flexbert/patches was imported; "
                            f"import it first for full CPU speed ({machine.vendor} CPU)")
    if machine.system == "Linux":
        return FastPath("interpose", machine.vendor)
    if machine.avx2:
        return FastPath("env", machine.vendor)
    return FastPath("none", f"left alone ({machine.vendor} CPU without AVX2)")


def cpu_vendor_and_avx2(system: str) -> tuple[str, bool]:
    """(vendor id, has AVX2 and FMA) from /proc/cpuinfo on Linux, the Windows API on Windows."""
    if system == "Windows":  # platform.processor(): 'AMD64 Family 25 Model 1 Stepping 1, AuthenticAMD'
        import ctypes

        ident = platform.processor()
        vendor = ident.rsplit(",", 1)[-1].strip() if "," in ident else ""
        return vendor, bool(ctypes.windll.kernel32.IsProcessorFeaturePresent(40))  # PF_AVX2_INSTRUCTIONS_AVAILABLE
    try:
        with open("/proc/cpuinfo") as info:
            first_cpu = info.read().split("\n\n")[0]
    except OSError:
        return "", False
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first_cpu.splitlines() if ":" in line)}
    return fields.get("vendor_id", ""), {"avx2", "fma"} <= set(fields.get("flags", "").split())


def paddle_mkl(system: str) -> Optional[str]:
    """Path of the MKL library inside the installed paddle package, found without importing paddle."""
    name = MKL_LIBRARY.get(system)
    spec = importlib.util.find_spec("paddle") if name else None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "libs", name)
    return path if os.path.exists(path) else None


def this_machine() -> Machine:
    """The Machine this process runs on."""
    system = platform.system()
    vendor, avx2 = cpu_vendor_and_avx2(system)
    mkl = paddle_mkl(system)
    return Machine(system, platform.machine(), vendor, avx2, mkl, mkl is not None and mkl_loaded(mkl))


def mkl_loaded(path: str) -> bool:
    """Is ``path`` mapped into this process?  paddle loads MKL at its first math op, not at import,
    so ``import paddle`` before ``import patches`` is still in time.  (Without /proc: is paddle imported.)
    """
    try:
        with open("/proc/self/maps") as maps:
            return os.path.realpath(path) in maps.read()
    except OSError:
        return "paddle" in sys.modules


def cache_dir() -> str:
    """Where the built library is kept between runs: the user's cache, else a private temp folder.

    The library is loaded into the process, so the folder must be this user's and writable by
    no one else (a shared /tmp/ofa_flexbert would let another user plant one).
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (os.path.join(base, "ofa_flexbert"),
                   os.path.join(tempfile.gettempdir(), f"ofa_flexbert-{os.getuid()}")):
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            info = os.stat(folder)
        except OSError:
            continue
        if info.st_uid == os.getuid() and not info.st_mode & 0o022 and os.access(folder, os.W_OK):
            return folder
    raise OSError("no private writable cache folder")


def build_library() -> tuple[Optional[str], str]:
    """(path of the one-function library, '') or (None, why not); built once per compiler and cached."""
    compiler = os.environ.get("CC") or next(
        (c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if not compiler:
        return None, "no C compiler"
    try:
        folder = cache_dir()
    except OSError as exc:
        return None, str(exc)
    key = hashlib.sha256((SOURCE + compiler + platform.machine()).encode()).hexdigest()[:12]
    path = os.path.join(folder, f"mkl_intel_cpu_true-{key}.so")
    if os.path.exists(path):
        return path, ""
    source = os.path.join(folder, f"mkl_intel_cpu_true-{key}.{os.getpid()}.c")
    tmp = path + f".{os.getpid()}.tmp"
    try:
        with open(source, "w") as out:
            out.write(SOURCE)
        done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", tmp, source],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return None, f"{compiler} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        os.replace(tmp, path)  # atomic: processes starting together never load a half-written file
        return path, ""
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{compiler}: {exc}"
    finally:
        for leftover in (source, tmp):
            if os.path.exists(leftover):
                os.remove(leftover)


def interpose() -> tuple[bool, str]:
    """Load the library globally so MKL's call binds to it; (done, why not)."""
    import ctypes

    path, why = build_library()
    if path is None:
        return False, why
    try:
        ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
    except OSError as exc:
        return False, f"loading {path}: {exc}"
    return True, ""


def set_env() -> str:
    """MKL_DEBUG_CPU_TYPE=5 unless the user set a value; returns the value in effect."""
    return os.environ.setdefault(ENV_VARIABLE, ENV_VALUE)


_installed = False


def install(environ: Optional[Mapping[str, str]] = None) -> str:
    """Take the planned way once per process; returns (and sets) :data:`status`."""
    global status, _installed
    if _installed:
        return status
    _installed = True
    machine = this_machine()
    chosen = choose_fast_path(machine, os.environ if environ is None else environ)
    if chosen.action == "interpose":
        done, why = interpose()
        if done:
            status = f"MKL fast path: on ({chosen.reason} CPU; mkl_serv_intel_cpu_true interposed)"
        elif machine.avx2:
            status = (f"MKL fast path: on, AVX2 only ({chosen.reason} CPU; {ENV_VARIABLE}={set_env()}; "
                      f"the faster interposed library could not be built: {why})")
        else:
            status = f"MKL fast path: off ({why}; {chosen.reason} CPU without AVX2)"
    elif chosen.action == "env":
        status = f"MKL fast path: on, AVX2 only ({chosen.reason} CPU; {ENV_VARIABLE}={set_env()})"
    else:
        status = f"MKL fast path: {chosen.reason}"
    if "NOT applied" in status:
        log_status()  # a user's script: say so now (logging's last-resort handler shows warnings)
    return status


_logged = False


def log_status() -> None:
    """The one log line (warning when the fast path was wanted but could not be applied)."""
    global _logged
    if _logged:  # once per process: --stage all and --demo run several stages
        return
    _logged = True
    level = logging.WARNING if "NOT applied" in status else logging.INFO
    logger.log(level, "%s", status)

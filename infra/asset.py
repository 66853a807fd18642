"""The Lambda code asset, built without Docker: only what the functions import at run time.

``pip install --platform manylinux2014_<arch> --only-binary=:all:`` fetches
the Linux wheels of the runtime dependencies (the OpenTelemetry API and SDK,
psycopg with its bundled libpq) for Lambda's Python, and the ``tracing`` and
``handlers`` packages are copied beside them.  boto3 is left out: the Lambda
runtime has it, and the token path does not import it when the credentials
are in the environment.  The build is skipped when nothing it depends on
changed.

Everything is then compiled to bytecode by an interpreter of Lambda's Python
version, found on the machine (``python3.13`` on ``PATH``, pyenv's or uv's):
Lambda's code folder is read-only, so without ``.pyc`` files every cold start
compiles the toolkit, the OpenTelemetry SDK and psycopg from source again
(about 220 ms on the project's machine, ``python -m bench.bytecode``).  The
files are ``unchecked-hash`` pycs: valid whatever timestamps the zip gives the
sources.  Without such an interpreter the asset is built without them, with
one warning.

    python -m infra.asset [--arch arm64] [--python 3.13] [--out build/lambda-arm64]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What the functions import at run time (kept in step with pyproject.toml's core dependencies).
RUNTIME_REQUIREMENTS = (
    "opentelemetry-api>=1.30,<2",
    "opentelemetry-sdk>=1.30,<2",
    "psycopg[binary]>=3.2,<4",
)
PACKAGES = ("tracing", "handlers")
_PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}


def find_interpreter(version: str) -> str | None:
    """An interpreter of Python ``version`` (``"3.13"``) on this machine, or None."""
    home = os.path.expanduser("~")
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(f"{home}/.pyenv/versions/{version}.*/bin/python{version}")),
        *sorted(
            glob.glob(f"{home}/.local/share/uv/python/cpython-{version}.*/bin/python{version}")
        ),
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        try:
            found = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if found == version:
            return candidate
    return None


def compile_bytecode(folder: Path, python: str) -> bool:
    """Compile every module under ``folder`` for Python ``python``; False (and one
    warning) when no interpreter of that version is found."""
    interpreter = find_interpreter(python)
    if interpreter is None:
        warnings.warn(
            f"no Python {python} interpreter found: the asset has no bytecode, and each "
            f"cold start compiles its modules from source (install python{python})",
            stacklevel=2,
        )
        return False
    command = [interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode"]
    subprocess.run([*command, "unchecked-hash", str(folder)], check=True)
    return True


def _fingerprint(arch: str, python: str) -> str:
    digest = hashlib.sha256(
        f"{arch} {python} {RUNTIME_REQUIREMENTS} {find_interpreter(python)}".encode()
    )
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build(out: Path | None = None, *, arch: str = "arm64", python: str = "3.13") -> Path:
    """Build (or reuse) the asset folder; returns it."""
    out = out or ROOT / "build" / f"lambda-{arch}"
    stamp = out / ".fingerprint"
    fingerprint = _fingerprint(arch, python)
    if stamp.exists() and stamp.read_text() == fingerprint:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--no-warn-conflicts",  # the target folder, not this environment, is what counts
            "--target",
            str(out),
            "--platform",
            _PLATFORMS[arch],
            "--implementation",
            "cp",
            "--python-version",
            python,
            "--only-binary=:all:",
            *RUNTIME_REQUIREMENTS,
        ],
        check=True,
    )
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, out / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for junk in out.glob("*.dist-info"):
        for name in ("RECORD", "INSTALLER", "REQUESTED"):
            (junk / name).unlink(missing_ok=True)
    compile_bytecode(out, python)
    stamp.write_text(fingerprint)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(_PLATFORMS), default="arm64")
    parser.add_argument("--python", default="3.13")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    folder = build(args.out, arch=args.arch, python=args.python)
    print(f"Lambda asset {folder}: {size_of(folder) / 1e6:.1f} MB unzipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The local Triton Inference Server: the real ``tritonserver`` from the ``nvidia-pytriton`` wheel.

It runs on CPU here. Three things make the wheel's server usable on its own:

* ``LD_LIBRARY_PATH`` must name the wheel's ``nvidia_pytriton.libs/`` and the directory of the
  ``libpython`` that the Python-backend stub links against;
* the stub for this Python version is copied into a backend directory of our own;
* the stub starts an isolated interpreter (``PYTHONPATH`` is ignored) whose numpy C-API must be
  1.x, so the models' Python packages live in their own site directory, installed from
  ``triton_repo/requirements.txt``, and each ``model.py`` adds it with ``site.addsitedir`` from
  ``STREAMSENSE_PYTHONPATH``. In NVIDIA's GPU container that variable is unset and the
  container's own Python packages are used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import sysconfig
import urllib.request
from pathlib import Path

from streams.local.paths import repo_root
from streams.local.process import Service, ServiceError, run_step

__all__ = ["models_ready", "provision", "triton_ready", "triton_service"]


def _pytriton_dir() -> Path:
    # find_spec locates the wheel without importing it: pytriton's own Python API needs
    # dependencies that `make setup` deliberately leaves out (it pins numpy<2).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "nvidia-pytriton is not installed: run `make setup` (it installs the Triton server)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _requirements() -> Path:
    return repo_root() / "triton_repo" / "requirements.txt"


def provision(triton_dir: Path, *, quiet: bool = True) -> Path:
    """Prepare the backend directory and the models' site directory under ``triton_dir``.

    Idempotent: the site directory is rebuilt only when ``triton_repo/requirements.txt`` changes.
    """
    wheel = _pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServiceError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    backend = triton_dir / "backends" / "python"
    if not (backend / "triton_python_backend_stub").exists():
        if backend.exists():
            shutil.rmtree(backend)
        shutil.copytree(wheel / "backends" / "python", backend,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, backend / "triton_python_backend_stub")

    requirements = _requirements()
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    site = triton_dir / "python"
    stamp = site / f".complete-{digest}"
    if not stamp.exists():
        if site.exists():
            shutil.rmtree(site)
        run_step([sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []),
                  "--disable-pip-version-check", "--no-warn-conflicts", "--target", str(site),
                  "-r", str(requirements)],
                 what="installing Triton's model packages", quiet=quiet)
        stamp.write_text(digest)
    return triton_dir


def _library_path(wheel_libs: Path) -> str:
    # The stub links libpython3.X.so.1.0: prefer the one of the interpreter that built the
    # models' site directory, so compiled extensions match it.
    dirs = [str(wheel_libs)]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir, sysconfig.get_config_var("INSTSONAME") or "").exists():
        dirs.insert(0, libdir)
    return ":".join(dirs)


def triton_service(*, home: Path, triton_dir: Path, model_repository: Path, http_port: int,
                   grpc_port: int, metrics_port: int) -> Service:
    """The server as a :class:`Service`, bound to 127.0.0.1, serving ``model_repository``."""
    pytriton = _pytriton_dir()
    binary = pytriton / "tritonserver" / "bin" / "tritonserver"
    host = "127.0.0.1"
    argv = [
        str(binary),
        f"--model-repository={model_repository.resolve()}",
        f"--backend-directory={(triton_dir / 'backends').resolve()}",
        f"--http-address={host}", f"--http-port={http_port}",
        f"--grpc-address={host}", f"--grpc-port={grpc_port}",
        f"--metrics-address={host}", f"--metrics-port={metrics_port}",
        "--allow-metrics=true", "--allow-gpu-metrics=false",
        # Explicit control: `streamsense model load/rollback` switch versions while serving.
        "--model-control-mode=explicit", "--load-model=*",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]
    env = {
        "LD_LIBRARY_PATH": _library_path(pytriton.parent / "nvidia_pytriton.libs"),
        "STREAMSENSE_PYTHONPATH": str((triton_dir / "python").resolve()),
    }
    return Service(
        name="triton",
        argv=argv,
        env=env,
        run_dir=home / "run",
        ports=[(host, http_port), (host, grpc_port), (host, metrics_port)],
        health=lambda: triton_ready(f"{host}:{http_port}"),
    )


def triton_ready(http_url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether Triton answers ``/v2/health/ready`` with 200 (every model loaded)."""
    url = http_url if http_url.startswith("http") else f"http://{http_url}"
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False


def models_ready(http_url: str, *, timeout_s: float = 2.0) -> dict[str, str]:
    """``{model: state}`` from Triton's repository index (``READY``, ``UNAVAILABLE`` ...)."""
    import json

    url = http_url if http_url.startswith("http") else f"http://{http_url}"
    req = urllib.request.Request(f"{url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        index = json.load(resp)
    return {m["name"]: m.get("state", "UNKNOWN") for m in index}

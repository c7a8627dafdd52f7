"""Where the repository's files are, for the local launcher (which runs from a checkout)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["repo_root"]


def repo_root() -> Path:
    """The checkout this package was installed from (``pip install -e .``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "deploy" / "local").is_dir():
        raise FileNotFoundError(
            f"{root} has no deploy/local/: the local stack runs from a checkout of StreamSense "
            "installed with `pip install -e .` (make setup does this)"
        )
    return root

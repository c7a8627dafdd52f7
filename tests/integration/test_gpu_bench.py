"""The GPU benchmark's bundle and its dry run (deploy/gpu): what a user runs on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deploy.gpu.bundle import bundle

pytestmark = pytest.mark.integration


def test_the_bundle_runs_alone_and_says_when_there_is_no_gpu(tmp_path):
    folder = bundle(tmp_path / "bundle")
    assert {"bench.py", "network.py", "pipeline.py", "weights.fp16.pt", "tokenizer.json", "texts.json",
            "reference.json", "model.json"} <= {p.name for p in folder.iterdir()}
    texts = json.loads((folder / "texts.json").read_text())
    assert len(texts["short"]) == 1024 and len(texts["long"]) > 900
    # Run as a user would on the GPU machine: from another directory, without the repository.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, str(folder / "bench.py"), "run", "--json", str(tmp_path / "r.json")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "sees no CUDA device" in result.stdout and "the bundle is sound" in result.stdout
    check = next(line for line in result.stdout.splitlines() if "bundle check on CPU" in line)
    agreement = json.loads(check.split(": ", 1)[1])
    assert all(a["sentiment"] >= 0.99 and a["tags"] >= 0.99 for a in agreement.values()), agreement
    assert json.loads((tmp_path / "r.json").read_text())["environment"]["gpu"] is None


def test_a_missing_bundle_is_a_clear_error(tmp_path):
    from deploy.gpu import bench

    with pytest.raises(SystemExit, match="holds no bundle"):
        bench.main(["run", "--bundle", str(tmp_path)])

"""Export the trained model to ONNX and install it into the Triton model repository.

Triton serves ``triton_repo/text_analysis``: a Python-backend model (``1/model.py``, committed)
that tokenises raw strings, runs the ONNX graph with onnxruntime and decodes sentiment and
entity spans with ``pipeline.py``. The generated files (``model.onnx``, ``tokenizer.json``,
``pipeline.py``, ``model_info.json``) are git-ignored and written by ``make setup``.

ONNX for onnxruntime was chosen over TorchScript and HF-in-Python on measured CPU throughput
(see BENCHMARKS.md); the same graph runs on GPU with onnxruntime's CUDA or TensorRT providers.
``model.fp16.onnx`` is the same graph in half precision (inputs and outputs stay int64 and
float32) for GPUs, where it halves memory traffic and uses tensor cores: the GPU config
(``configs/gpu.pbtxt``) selects it with ``precision: fp16``. It is checked here against the
float32 graph on CPU (same labels, probabilities within 0.01); the CPU config keeps float32,
which onnxruntime runs faster on CPU.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from models.bert import calibration, train
from models.bert.pipeline import encode

__all__ = ["MODEL_NAME", "OUTPUTS", "export_onnx", "export_onnx_fp16", "install", "main", "next_version"]

MODEL_NAME = "text_analysis"
OUTPUTS = ("sentiment_probs", "tag_probs", "embedding")
_CHECK_TEXTS = ["Apple is opening a new store in Berlin, said Tim Cook.", "Terrible. Broke in a day.",
                "ok", "Grüße aus Köln! Das Essen war ausgezeichnet."]


def export_onnx(folder: Path) -> Path:
    """``folder/model.onnx`` (probabilities out), checked against torch; cached."""
    import torch
    from tokenizers import Tokenizer

    target = folder / "model.onnx"
    if target.exists() and _outputs(target) == list(OUTPUTS):
        return target
    model = train.load(folder)

    class WithProbabilities(torch.nn.Module):
        """TextAnalyzer's forward, plus the L2-normalised mean-pooled embedding it computes on
        the way (what the sentiment head reads; the worker's adapter learns from it)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, casing):
            hidden = self.inner.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            sentiment, tags = self.inner.sentiment(pooled), self.inner.tagger(hidden, casing, mask)
            embedding = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-6)
            return sentiment.softmax(-1), tags.softmax(-1), embedding

    wrapped = WithProbabilities().eval()
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    enc = encode(tokenizer, _CHECK_TEXTS, max_length=64)
    inputs = tuple(torch.from_numpy(a) for a in (enc.input_ids, enc.attention_mask, enc.casing))
    tmp = folder / "model.onnx.tmp"
    torch.onnx.export(
        wrapped, inputs, str(tmp), input_names=["input_ids", "attention_mask", "casing"],
        output_names=list(OUTPUTS), opset_version=17, dynamo=False,
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                      "casing": {0: "batch", 1: "tokens"}, "sentiment_probs": {0: "batch"},
                      "tag_probs": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
    _check(tmp, wrapped, inputs)
    tmp.rename(target)
    return target


def export_onnx_fp16(folder: Path) -> Path:
    """``folder/model.fp16.onnx``: the float32 graph converted to half precision; cached."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from tokenizers import Tokenizer

    target = folder / "model.fp16.onnx"
    if target.exists() and _outputs(target) == list(OUTPUTS):
        return target
    source = export_onnx(folder)
    tmp = folder / "model.fp16.onnx.tmp"
    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(tmp))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    enc = encode(tokenizer, _CHECK_TEXTS, max_length=64)
    feed = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "casing": enc.casing}
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feed)
    got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, feed)
    mask = enc.attention_mask.astype(bool)
    for name, g, w in zip(("sentiment", "tags", "embedding"), got, want, strict=True):
        same_labels = g.argmax(-1) == w.argmax(-1) if name != "embedding" else np.ones(len(g), dtype=bool)
        if name == "tags":
            same_labels = same_labels[mask]  # padding's tags are never read
        if not same_labels.all() or not np.allclose(g, w, atol=1e-2):
            raise RuntimeError(f"the fp16 graph's {name} differs from float32 "
                               f"(max {np.abs(g - w).max():.2e}, labels agree: {bool(same_labels.all())})")
    tmp.rename(target)
    return target


def _outputs(graph: Path) -> list[str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return [o.name for o in session.get_outputs()]


def _check(onnx_path: Path, torch_model, inputs) -> None:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(["input_ids", "attention_mask", "casing"],
                                     [t.numpy() for t in inputs], strict=True)))
    with torch.no_grad():
        want = [t.numpy() for t in torch_model(*inputs)]
    for g, w in zip(got, want, strict=True):
        if not np.allclose(g, w, atol=1e-4):
            raise RuntimeError(f"ONNX export differs from torch by {np.abs(g - w).max():.2e}")


def install(folder: Path, repository: Path, *, version: int = 1) -> Path:
    """Copy the model's generated files into ``repository/text_analysis/<version>/`` (version 1:
    ``make setup``'s, with its fitted neutral offset; later ones: ``streamsense train --labels``
    and ``streamsense learn``, with version 1's ``model.py`` and no offset, since a model
    fine-tuned on the user's own labels learned their domain's balance)."""
    source = repository / MODEL_NAME / "1" / "model.py"
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing: is {repository} a StreamSense triton_repo?")
    version_dir = repository / MODEL_NAME / str(version)
    version_dir.mkdir(exist_ok=True)
    meta = json.loads((folder / "complete.json").read_text())
    # ``weights``: where the torch weights are, for fine-tuning this version later.
    info = {"name": MODEL_NAME, "version": f"minilm-l6-multitask-{meta['key']}",
            "sentiment_labels": meta["sentiment_labels"], "tags": meta["tags"],
            "max_tokens": 256, "outputs": list(OUTPUTS), "weights": str(folder.resolve())}
    if version == 1:  # the base model: its neutral prior corrected for reviews (calibration.py)
        info["sentiment_log_offsets"] = {calibration.DOMAIN: {"neutral": calibration.neutral_offset(folder)}}
    current = version_dir / "model_info.json"
    if current.exists() and json.loads(current.read_text()) == info and \
            all((version_dir / f).exists() for f in ("model.onnx", "model.fp16.onnx", "model.py")):
        return version_dir
    shutil.copy2(export_onnx(folder), version_dir / "model.onnx")
    shutil.copy2(export_onnx_fp16(folder), version_dir / "model.fp16.onnx")
    shutil.copy2(folder / "tokenizer.json", version_dir / "tokenizer.json")
    shutil.copy2(Path(__file__).with_name("pipeline.py"), version_dir / "pipeline.py")
    if version != 1:
        shutil.copy2(source, version_dir / "model.py")
    current.write_text(json.dumps(info, indent=2) + "\n")
    return version_dir


def next_version(repository: Path) -> int:
    """One more than the highest installed version of ``text_analysis``."""
    numbers = [int(p.name) for p in (repository / MODEL_NAME).iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=0) + 1


def main() -> None:
    repository = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("triton_repo")
    if not (train.model_dir() / "complete.json").exists():
        # Said before anything else happens: a first setup otherwise sits here silently at first.
        print(f"training the text models: {train.model_dir()} is missing (first setup, or the training "
              "code or data changed). About 32 minutes on 2 CPU cores, once; progress follows.",
              file=sys.stderr, flush=True)
    folder = train.ensure_trained(log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(install(folder, repository))


if __name__ == "__main__":
    main()

"""Pack what ``deploy/gpu/bench.py`` needs into one folder that runs offline on a GPU machine.

``make bench-gpu-bundle`` (after ``make setup``) writes ``.gpu-bundle/`` (about 48 MB):

* ``weights.fp16.pt``, ``model.json``, ``tokenizer.json``: the served model (the same trained
  weights as ``model.onnx``, in half precision) and how to build its network;
* ``network.py``, ``pipeline.py``, ``bench.py``: the code, copied, so the folder is self-contained;
* ``texts.json``: 1,024 synthetic reviews (the templates ``make bench`` uses on CPU, short) and up
  to 1,024 drugs.com reviews (real, long);
* ``reference.json``: the labels the served float32 graph (``model.onnx`` on onnxruntime CPU)
  gives the first 256 texts of each set, so the GPU run can check that its precision agrees;
* ``model.fp16.onnx`` with ``--onnx`` (another 47 MB): the graph the GPU Triton config serves,
  measured too where onnxruntime has its CUDA provider.

Copy the folder to the GPU machine and run ``python3 .gpu-bundle/bench.py run`` there.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

__all__ = ["bundle", "main"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TEXTS_PER_SET = 1024
REFERENCE_TEXTS = 256


def bundle(out: Path, *, onnx: bool = False) -> Path:
    import torch

    from models.bert import train

    folder = train.model_dir()
    meta = json.loads((folder / "complete.json").read_text())
    config = train.TrainConfig(**meta["config"])
    out.mkdir(parents=True, exist_ok=True)
    state = torch.load(folder / "weights.pt", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(half, out / "weights.fp16.pt")
    network = {"n_sentiment": len(meta["sentiment_labels"]), "n_tags": len(meta["tags"]), "casing_classes": 5,
               "casing_dim": config.casing_dim, "tagger": "context" if config.tagger_epochs > 0 else "mlp",
               "width": config.tagger_width, "kernel": config.tagger_kernel, "layers": config.tagger_layers}
    model = {"version": f"minilm-l6-multitask-{meta['key']}", "max_tokens": 256, "network": network,
             "encoder": json.loads((folder / "encoder_config.json").read_text()),
             "sentiment_labels": meta["sentiment_labels"], "tags": meta["tags"]}
    (out / "model.json").write_text(json.dumps(model, indent=2) + "\n")
    shutil.copy2(folder / "tokenizer.json", out / "tokenizer.json")
    for source in (REPO / "models/bert/network.py", REPO / "models/bert/pipeline.py", HERE / "bench.py"):
        shutil.copy2(source, out / source.name)
    texts = _texts()
    (out / "texts.json").write_text(json.dumps(texts, ensure_ascii=False))
    (out / "reference.json").write_text(json.dumps(_reference(folder, texts)))
    if onnx:
        shutil.copy2(folder / "model.fp16.onnx", out / "model.fp16.onnx")
    else:
        (out / "model.fp16.onnx").unlink(missing_ok=True)
    return out


def _texts() -> dict[str, list[str]]:
    from models.bert import data
    from streams.synthetic import synthetic_events

    short = [e["text"] for e in synthetic_events("reviews", TEXTS_PER_SET, seed=1)]
    drugs = [r.text for r in data.drug_reviews()]
    np.random.default_rng(7).shuffle(drugs)
    return {"short": short, "long": drugs[:TEXTS_PER_SET]}


def _reference(folder: Path, texts: dict[str, list[str]]) -> dict[str, dict[str, list]]:
    """Labels of the served float32 graph: sentiment per text, entity tag per real token."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from models.bert.pipeline import encode

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    out = {}
    for name, items in texts.items():
        sentiment, tags = [], []
        for start in range(0, REFERENCE_TEXTS, 32):
            enc = encode(tokenizer, items[start:start + 32], max_length=256)
            probs, tag_probs, *_ = session.run(None, {"input_ids": enc.input_ids,
                                                  "attention_mask": enc.attention_mask, "casing": enc.casing})
            sentiment += probs.argmax(-1).tolist()
            tags += [row[mask == 1].tolist() for row, mask in zip(tag_probs.argmax(-1), enc.attention_mask,
                                                                   strict=True)]
        out[name] = {"sentiment": sentiment, "tags": tags}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / ".gpu-bundle")
    parser.add_argument("--onnx", action="store_true", help="also pack model.fp16.onnx (47 MB)")
    args = parser.parse_args()
    path = bundle(args.out, onnx=args.onnx)
    size = sum(p.stat().st_size for p in path.iterdir()) / 1e6
    print(f"{path} ({size:.0f} MB): copy it to the GPU machine and run python3 {path.name}/bench.py run")


if __name__ == "__main__":
    main()

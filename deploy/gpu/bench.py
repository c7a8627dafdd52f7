"""What one NVIDIA GPU serves of StreamSense's text model, measured offline in a few minutes.

Runs on a bare GPU machine with ``python3`` holding torch (CUDA), transformers, tokenizers and
numpy (NVIDIA's PyTorch container, for one), from a folder made by ``make bench-gpu-bundle``
(``deploy/gpu/bundle.py``); nothing is downloaded. ``python3 .gpu-bundle/bench.py run`` measures:

1. ``model``: sequences/s of the served network (MiniLM-L6 encoder, sentiment head, entity
   tagger; the trained weights) per batch size 1-256 in float32, float16 and bfloat16, on short
   (synthetic) and long (drugs.com) reviews; padded tokens/s, achieved TFLOP/s, the share of a
   16-bit matrix product's rate measured on the same GPU in the same run, and the share of the
   GPU's datasheet peak (model FLOPs utilisation);
2. ``agreement``: each precision's labels against the served float32 graph's (computed on CPU
   when the bundle was made): sentiment per text, entity tag per token;
3. ``serving``: the Triton Python backend's whole request path (``triton_repo/text_analysis/1/
   model.py``: tokenise, run in length-sorted chunks of 128, decode labels and entity spans to
   JSON) with this GPU running the float16 network, for requests of 64-256 texts, with 1, 2 and
   4 instances (threads) sharing the GPU: texts/s and where each text's time goes;
4. ``onnxruntime``: the float16 ONNX graph the GPU Triton config serves, per batch size, where
   onnxruntime has its CUDA provider and the bundle holds ``model.fp16.onnx``.

Without a GPU it says so, checks the bundle on CPU (the network loads, a batch runs and agrees
with the reference) and exits with status 3: a dry run. ``--json FILE`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Dense 16-bit tensor-core peaks from NVIDIA's datasheets (TFLOP/s, SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
               "T4": 65.0}
NO_GPU = 3
STAGES = ("model", "serving", "onnxruntime")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run",))
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seconds", type=float, default=0.6, help="per measured cell")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--only", nargs="+", choices=STAGES, default=STAGES, help="stages to run "
                        "(the precisions' agreement with the served graph is always checked)")
    args = parser.parse_args(argv)
    if not (args.bundle / "model.json").exists():
        sys.exit(f"{args.bundle} holds no bundle: make one with `make bench-gpu-bundle` and pass --bundle")
    bench = Bench(args.bundle, args.seconds, tuple(args.only))
    status = bench.run()
    if args.json:
        args.json.write_text(json.dumps(bench.results, indent=1) + "\n")
    return status


class Bench:
    def __init__(self, bundle: Path, seconds: float, only: tuple[str, ...] = STAGES) -> None:
        sys.path.insert(0, str(bundle))
        self.bundle, self.seconds, self.only = bundle, seconds, only
        self.meta = json.loads((bundle / "model.json").read_text())
        self.texts = json.loads((bundle / "texts.json").read_text())
        self.reference = json.loads((bundle / "reference.json").read_text())
        self.results: dict = {}

    def run(self) -> int:
        import torch
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(self.bundle / "tokenizer.json"))
        self.results["environment"] = env = _environment(torch)
        _say("environment", json.dumps(env))
        if not torch.cuda.is_available():
            _say("no GPU", f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA "
                 "device; checking the bundle on CPU instead, nothing is measured")
            model = self._model(torch, "cpu", torch.float32)
            agree = self._agreement(torch, model, "cpu", limit=32)
            _say("bundle check on CPU", json.dumps(agree))
            if min(agree[s]["sentiment"] for s in agree) < 0.99:
                _say("FAILED", "the bundle's network does not reproduce the served graph on CPU")
                return 1
            _say("dry run", "the bundle is sound; run this on a machine with an NVIDIA GPU")
            return NO_GPU
        self.results["matmul_tflops"] = _matmul_tflops(torch)
        _say("16-bit matrix product",
             f"{self.results['matmul_tflops']:.0f} TFLOP/s (8192^3 bf16, this GPU, now)")
        models = {}
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            models[name] = self._model(torch, "cuda", dtype)
            self.results.setdefault("agreement", {})[name] = self._agreement(torch, models[name], "cuda")
            _say(f"agreement {name}", json.dumps(self.results["agreement"][name]))
            if "model" in self.only:
                self.results.setdefault("model", {})[name] = self._sweep(torch, models[name], name)
        if "model" in self.only:
            self.results["new_shape"] = self._new_shape(torch, models["fp16"])
        if "serving" in self.only:
            self.results["serving"] = self._serving()
        if "onnxruntime" in self.only:
            self.results["onnxruntime"] = self._onnxruntime()
        return 0

    def _model(self, torch, device: str, dtype):
        from network import TextAnalyzer
        from transformers import BertConfig, BertModel

        encoder = BertModel(BertConfig(**self.meta["encoder"]), add_pooling_layer=False)
        model = TextAnalyzer(encoder, **self.meta["network"])
        state = torch.load(self.bundle / "weights.fp16.pt", weights_only=True, map_location="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Buffers that some transformers versions save and others rebuild are not weights.
        stray = [k for k in (*missing, *unexpected) if not k.endswith(("position_ids", "token_type_ids"))]
        if stray:
            raise RuntimeError(f"the bundle's weights do not fit the network: {stray[:5]}")
        return model.to(device=device, dtype=dtype).eval()

    def _encode(self, texts: list[str]):
        import pipeline

        return pipeline.encode(self.tokenizer, texts, max_length=self.meta["max_tokens"])

    def _forward(self, torch, model, enc, device: str):
        with torch.inference_mode():
            args = [torch.from_numpy(a).to(device, non_blocking=True)
                    for a in (enc.input_ids, enc.attention_mask, enc.casing)]
            sentiment, tags = model(*args)
            return sentiment.float().softmax(-1).cpu().numpy(), tags.float().softmax(-1).cpu().numpy()

    def _agreement(self, torch, model, device: str, limit: int = 256) -> dict:
        out = {}
        for name, ref in self.reference.items():
            same_sentiment = same_tags = tokens = 0
            n = min(limit, len(ref["sentiment"]))
            for start in range(0, n, 32):
                enc = self._encode(self.texts[name][start:min(start + 32, n)])
                sentiment, tags = self._forward(torch, model, enc, device)
                for k, (label, row) in enumerate(zip(sentiment.argmax(-1), tags.argmax(-1), strict=True)):
                    want = ref["tags"][start + k]
                    got = row[enc.attention_mask[k] == 1].tolist()
                    same_sentiment += int(label == ref["sentiment"][start + k])
                    same_tags += sum(int(a == b) for a, b in zip(got, want, strict=True))
                    tokens += len(want)
            out[name] = {"texts": n, "sentiment": round(same_sentiment / n, 4),
                         "tags": round(same_tags / tokens, 4)}
        return out

    def _sweep(self, torch, model, precision: str) -> list[dict]:
        rows = []
        for name, texts in self.texts.items():
            for batch in BATCHES:
                starts = range(0, len(texts) - batch + 1, batch)
                encs = [self._encode(texts[i:i + batch]) for i in starts][:16]
                flops = [_flops(torch, model, enc, self) for enc in encs[:4]]
                cold = []
                for enc in encs:  # every padded length once: kernels chosen per shape, memory pooled
                    t0 = time.perf_counter()
                    self._forward(torch, model, enc, "cuda")
                    cold.append(time.perf_counter() - t0)
                times, done = [], 0
                started = time.perf_counter()
                while time.perf_counter() - started < self.seconds or len(times) < 5:
                    enc = encs[done % len(encs)]
                    t0 = time.perf_counter()
                    self._forward(torch, model, enc, "cuda")
                    times.append(time.perf_counter() - t0)
                    done += 1
                row = _row(name, batch, precision, encs, times, statistics.mean(flops), self)
                row["first_call_ms_max"] = round(1e3 * max(cold), 3)
                rows.append(row)
                _say(f"model {precision} {name}", json.dumps(row))
        return rows

    def _new_shape(self, torch, model) -> dict:
        """The first call at a padded length not seen before, against the next call at it, with
        cuDNN (which picks, and may compile, a convolution engine per shape) on and off."""
        out = {}
        lengths = {True: (37, 53, 71, 97, 131), False: (39, 55, 73, 99, 133)}
        for enabled, sizes in lengths.items():
            torch.backends.cudnn.enabled = enabled
            first, again = [], []
            for tokens in sizes:
                enc = self._encode([("word " * tokens).strip()] * 64)
                for bucket in (first, again):
                    t0 = time.perf_counter()
                    self._forward(torch, model, enc, "cuda")
                    bucket.append(time.perf_counter() - t0)
            out["cudnn_on" if enabled else "cudnn_off"] = {
                "first_ms": round(1e3 * statistics.median(first), 2),
                "again_ms": round(1e3 * statistics.median(again), 2)}
        torch.backends.cudnn.enabled = True
        _say("new padded length, batch 64 fp16", json.dumps(out))
        return out

    def _serving(self) -> list[dict]:
        """Model.py's request path, one process per instance as Triton's Python backend runs them
        (each its own interpreter and GIL, all sharing the GPU), for ``--seconds`` x 4 each."""
        import multiprocessing

        spawn = multiprocessing.get_context("spawn")
        rows = []
        for request, instances in ((128, 1), (128, 2), (128, 4), (128, 8), (256, 1), (256, 4)):
            barrier, results = spawn.Barrier(instances + 1), spawn.Queue()
            procs = [spawn.Process(target=_instance, args=(str(self.bundle), k, instances, request,
                                                           self.seconds * 4, barrier, results))
                     for k in range(instances)]
            for p in procs:
                p.start()
            barrier.wait(timeout=300)  # every instance loaded and warm
            started = time.perf_counter()
            done = [results.get(timeout=300) for _ in procs]
            elapsed = time.perf_counter() - started
            for p in procs:
                p.join(timeout=60)
            served = sum(d["texts"] for d in done)
            row = {"request": request, "instances": instances, "texts_per_s": round(served / elapsed),
                   **{f"{k}_us_per_text": round(1e6 * sum(d[k] for d in done) / served, 1)
                      for k in ("tokenise", "network", "decode")}}
            rows.append(row)
            _say("serving fp16", json.dumps(row))
        return rows

    def _onnxruntime(self) -> dict:
        graph = self.bundle / "model.fp16.onnx"
        try:
            import onnxruntime as ort
        except ImportError:
            return _skip("onnxruntime is not installed")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return _skip(f"onnxruntime {ort.__version__} has no CUDA provider "
                         f"({ort.get_available_providers()}); the GPU Triton config needs onnxruntime-gpu")
        if not graph.exists():
            return _skip("the bundle holds no model.fp16.onnx (make it with --onnx)")
        session = ort.InferenceSession(str(graph), providers=["CUDAExecutionProvider"])
        rows = []
        for name, texts in self.texts.items():
            for batch in (1, 16, 64, 256):
                enc = self._encode(texts[:batch])
                feed = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
                        "casing": enc.casing}
                session.run(None, feed)
                times = []
                started = time.perf_counter()
                while time.perf_counter() - started < self.seconds or len(times) < 5:
                    t0 = time.perf_counter()
                    session.run(None, feed)
                    times.append(time.perf_counter() - t0)
                rows.append({"texts": name, "batch": batch,
                             "sequences_per_s": round(batch / statistics.median(times))})
                _say("onnxruntime fp16", json.dumps(rows[-1]))
        return {"rows": rows}


def _instance(bundle: str, index: int, instances: int, request: int, seconds: float, barrier,
              results) -> None:
    """One Triton instance's stand-in: the fp16 network on the GPU, requests of ``request`` texts."""
    import pipeline
    import torch

    bench = Bench(Path(bundle), seconds)
    from tokenizers import Tokenizer

    bench.tokenizer = Tokenizer.from_file(str(bench.bundle / "tokenizer.json"))
    model = bench._model(torch, "cuda", torch.float16)
    texts = bench.texts["long"] + bench.texts["short"]
    texts = texts[:len(texts) // 256 * 256]  # requests always cut the list at the same places
    for start in range(0, len(texts), request):  # warm-up: each request's shapes once
        _analyse(torch, model, bench, pipeline, texts[start:start + request])
    barrier.wait(timeout=300)
    took = {"tokenise": 0.0, "network": 0.0, "decode": 0.0, "texts": 0}
    at, deadline = index * request, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for key, value in _analyse(torch, model, bench, pipeline, texts[at:at + request]).items():
            took[key] += value
        took["texts"] += request
        at = (at + request * instances) % len(texts)
    results.put(took)


def _analyse(torch, model, bench: Bench, pipeline, texts: list[str]) -> dict[str, float]:
    took = {"tokenise": 0.0, "network": 0.0, "decode": 0.0}
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), 128):
        chunk = [texts[i] for i in order[start:start + 128]]
        t0 = time.perf_counter()
        enc = bench._encode(chunk)
        t1 = time.perf_counter()
        sentiment, tags = bench._forward(torch, model, enc, "cuda")
        t2 = time.perf_counter()
        for k, text in enumerate(chunk):
            pipeline.analysis_json(text, sentiment[k], tags[k], enc.offsets[k], truncated=enc.truncated[k],
                                   max_tokens=bench.meta["max_tokens"], model=bench.meta["version"])
        t3 = time.perf_counter()
        took["tokenise"] += t1 - t0
        took["network"] += t2 - t1
        took["decode"] += t3 - t2
    return took


def _row(name: str, batch: int, precision: str, encs, times: list[float], flops: float, bench: Bench) -> dict:
    median = statistics.median(times)
    padded = statistics.mean(e.input_ids.size for e in encs)
    achieved = flops / median / 1e12
    peak = bench.results["environment"].get("peak_tflops")
    return {"texts": name, "batch": batch, "precision": precision, "sequences_per_s": round(batch / median),
            "batch_ms_p50": round(1e3 * median, 3), "batch_ms_p99": round(1e3 * _quantile(times, 0.99), 3),
            "padded_tokens": round(padded / batch, 1), "tokens_per_s": round(padded / median),
            "tflops": round(achieved, 2), "of_matmul": round(achieved / bench.results["matmul_tflops"], 4),
            "mfu": round(achieved / peak, 4) if peak else None}


def _flops(torch, model, enc, bench: Bench) -> float:
    """Multiply-adds x2 of one forward: every linear and convolution layer (counted by hooks) plus
    the attention products (4 * T^2 * hidden per sequence and layer)."""
    total = [0.0]

    def count(module, inputs, output) -> None:
        if isinstance(module, torch.nn.Linear):
            total[0] += 2.0 * module.in_features * output.numel()
        else:
            total[0] += 2.0 * module.in_channels * module.kernel_size[0] * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, torch.nn.Linear | torch.nn.Conv1d)]
    try:
        bench._forward(torch, model, enc, next(model.parameters()).device.type)
    finally:
        for h in hooks:
            h.remove()
    config = bench.meta["encoder"]
    batch, tokens = enc.input_ids.shape
    return total[0] + 4.0 * batch * tokens * tokens * config["hidden_size"] * config["num_hidden_layers"]


def _matmul_tflops(torch) -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - started) / 1e12


def _environment(torch) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpus": os.cpu_count(), "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count,
                   peak_tflops=next((v for k, v in PEAK_TFLOPS.items() if k in props.name), None))
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            env["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _skip(reason: str) -> dict:
    _say("onnxruntime skipped", reason)
    return {"skipped": reason}


def _say(what: str, detail: str) -> None:
    print(f"[gpu-bench] {what}: {detail}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

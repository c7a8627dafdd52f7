"""Triton Python-backend model: raw texts in, sentiment and entity spans out (JSON per text),
and each text's sentence embedding (float16) for the clients that ask for ``EMBEDDING``.

Tokenisation happens here, server-side, with the encoder's own tokenizer; the network runs in
onnxruntime; ``pipeline.py`` (copied from models/bert by ``make setup``) turns tensors back into
labels and character-offset spans.
"""

import json
import os
import site
import sys

for _path in os.environ.get("STREAMSENSE_PYTHONPATH", "").split(os.pathsep):
    if _path:
        site.addsitedir(_path)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pipeline  # noqa: E402

# Texts are run in length-sorted chunks so short texts do not pay for a long one's padding
# (parameter "chunk": the GPU config runs larger ones).
CHUNK = 32
EMBEDDING_DIM = 384


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_tokens = int(params.get("max_tokens", "256"))
        self.chunk = int(params.get("chunk", str(CHUNK)))
        with open(os.path.join(HERE, "model_info.json"), encoding="utf-8") as fh:
            info = json.load(fh)
        self.version = info["version"]
        # The version's prior corrections per text domain (models/bert/calibration.py): log-offsets
        # per sentiment class, added before the label is chosen, for the requests whose parameter
        # "domain" names one ("reviews"); none for other texts, or in fine-tuned versions.
        self.log_offsets = {
            domain: np.array([float(shift.get(label, 0.0)) for label in pipeline.SENTIMENT_LABELS])
            for domain, shift in (info.get("sentiment_log_offsets") or {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        # precision "fp16" (the GPU config) runs the half-precision copy of the graph.
        graph = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}[params.get("precision", "fp32")]
        self.session = ort.InferenceSession(os.path.join(HERE, graph), options, providers=providers)
        self.tokenizer = Tokenizer.from_file(os.path.join(HERE, "tokenizer.json"))
        self.unk_id = self.tokenizer.token_to_id("[UNK]")

    def execute(self, requests):
        batches, wants, offsets = [], [], []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            batches.append([t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in raw])
            wants.append("EMBEDDING" in request.requested_output_names())
            offsets.append(self.log_offsets.get(self._domain(request)))
        try:
            results, embeddings = self._analyse([t for batch in batches for t in batch],
                                                [o for batch, o in zip(batches, offsets) for _ in batch])
        except Exception:
            # The dynamic batcher merged several clients' requests into this call: a text that
            # breaks the model must fail only its own request, not the others'.
            return [self._respond_alone(batch, want, o) for batch, want, o in zip(batches, wants, offsets)]
        responses, at = [], 0
        for batch, want in zip(batches, wants):
            end = at + len(batch)
            responses.append(self._response(results[at:end], embeddings[at:end] if want else None))
            at = end
        return responses

    @staticmethod
    def _domain(request):
        """The request's ``domain`` parameter (the text path sends its topic: "reviews", "news")."""
        try:
            return json.loads(request.parameters() or "{}").get("domain")
        except (AttributeError, TypeError, ValueError):
            return None

    def _respond_alone(self, texts, want, offsets):
        try:
            results, embeddings = self._analyse(texts, [offsets] * len(texts))
            return self._response(results, embeddings if want else None)
        except Exception as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"text_analysis failed on this request: {exc!r}"[:1000]))

    @staticmethod
    def _response(results, embeddings):
        tensors = [pb_utils.Tensor("ANALYSIS", np.array(results, dtype=np.object_).reshape(-1, 1))]
        if embeddings is not None:
            tensors.append(pb_utils.Tensor("EMBEDDING", embeddings))
        return pb_utils.InferenceResponse(tensors)

    def _analyse(self, texts, offsets):
        """``offsets``: per text, the log-offsets of its request's domain, or None."""
        results = [None] * len(texts)
        embeddings = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float16)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.chunk):
            idx = order[start:start + self.chunk]
            chunk = [texts[i] for i in idx]
            enc = pipeline.encode(self.tokenizer, chunk, max_length=self.max_tokens)
            sentiment, tags, embedding = self.session.run(None, {"input_ids": enc.input_ids,
                                                                 "attention_mask": enc.attention_mask,
                                                                 "casing": enc.casing})
            embeddings[idx] = embedding.astype(np.float16)
            for k, i in enumerate(idx):
                probs = sentiment[k] if offsets[i] is None else pipeline.shift_probs(sentiment[k], offsets[i])
                body = json.loads(pipeline.analysis_json(
                    chunk[k], probs, tags[k], enc.offsets[k], truncated=enc.truncated[k],
                    max_tokens=self.max_tokens, model=self.version))
                body["unknown_token_share"] = self._unknown_share(enc.input_ids[k], enc.attention_mask[k])
                results[i] = json.dumps(body, ensure_ascii=False)
        return results, embeddings

    def _unknown_share(self, ids, mask):
        """Share of the text's word pieces the vocabulary does not know (an input-drift signal:
        new scripts, emoji, garbage); the two special tokens are not counted."""
        pieces = int(mask.sum()) - 2
        if self.unk_id is None or pieces <= 0:
            return 0.0
        return round(int(((ids == self.unk_id) & (mask == 1)).sum()) / pieces, 4)

"""The Python-backend model fails only the request holding a text it cannot analyse, not the
other requests Triton's dynamic batcher merged into the same call. Runs the model's ``execute``
with a stand-in for Triton's ``triton_python_backend_utils`` (only importable inside Triton)."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

MODEL = Path(__file__).resolve().parents[2] / "triton_repo" / "text_analysis" / "1" / "model.py"


class _Response:
    def __init__(self, tensors=None, error=None):
        self.tensors, self.error = tensors, error


def _pb_utils():
    module = types.ModuleType("triton_python_backend_utils")
    module.get_input_tensor_by_name = lambda request, name: types.SimpleNamespace(as_numpy=lambda: request.texts)
    module.InferenceResponse = _Response
    module.Tensor = lambda name, array: (name, array)
    module.TritonError = lambda message: message
    return module


def _model_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _pb_utils())
    spec = importlib.util.spec_from_file_location("text_analysis_model", MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model(monkeypatch):
    pytest.importorskip("onnxruntime")
    if not (MODEL.parent / "pipeline.py").exists():
        pytest.skip("triton_repo is built by `make setup`")
    instance = _model_module(monkeypatch).TritonPythonModel()  # no initialize(): no network needed

    instance.log_offsets = {"reviews": np.array([0.0, -0.5, 0.0])}

    def analyse(texts, offsets):
        if any("POISON" in t for t in texts):
            raise ValueError("cannot analyse this text")
        shifted = ["" if o is None else f" shifted {o[1]}" for o in offsets]
        return [f"analysis of {t}{s}" for t, s in zip(texts, shifted, strict=True)], \
            np.array([[len(t)] for t in texts], dtype=np.float16)
    instance._analyse = analyse
    return instance


class _Request:
    """Triton's request as the model reads it: the TEXT tensor and the outputs asked for."""

    def __init__(self, *texts, outputs=("ANALYSIS",), parameters=""):
        self.texts = np.array([[t.encode()] for t in texts], dtype=np.object_)
        self.outputs = list(outputs)
        self._parameters = parameters

    def requested_output_names(self):
        return self.outputs

    def parameters(self):
        return self._parameters


def _request(*texts, outputs=("ANALYSIS",), parameters=""):
    return _Request(*texts, outputs=outputs, parameters=parameters)


def test_a_failing_text_fails_only_its_own_request(model):
    responses = model.execute([_request("good", "fine"), _request("POISON"), _request("ok")])
    assert [r.error is None for r in responses] == [True, False, True]
    assert "cannot analyse this text" in responses[1].error
    assert responses[0].tensors[0][1].reshape(-1).tolist() == ["analysis of good", "analysis of fine"]
    assert responses[2].tensors[0][1].reshape(-1).tolist() == ["analysis of ok"]


def test_embeddings_go_only_to_the_requests_that_ask_for_them(model):
    plain, both = model.execute([_request("a"), _request("bb", "ccc", outputs=("ANALYSIS", "EMBEDDING"))])
    assert [name for name, _ in plain.tensors] == ["ANALYSIS"]
    assert [name for name, _ in both.tensors] == ["ANALYSIS", "EMBEDDING"]
    assert both.tensors[1][1].reshape(-1).tolist() == [2.0, 3.0]


def test_merged_requests_are_answered_in_order(model):
    responses = model.execute([_request("a"), _request("b", "c")])
    assert [r.tensors[0][1].reshape(-1).tolist() for r in responses] == [["analysis of a"],
                                                                         ["analysis of b", "analysis of c"]]


def test_the_fp16_graph_gives_the_answers_of_float32(monkeypatch):
    """The GPU config's ``precision: fp16`` runs model.fp16.onnx; on CPU it must agree with
    float32 on labels and entity spans (probabilities differ in the third decimal)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    if not (MODEL.parent / "model.fp16.onnx").exists():
        pytest.skip("triton_repo is built by `make setup`")
    module = _model_module(monkeypatch)

    def answers(precision):
        instance = module.TritonPythonModel()
        config = {"parameters": {"precision": {"string_value": precision}}}
        instance.initialize({"model_config": json.dumps(config), "model_instance_kind": "CPU"})
        [response] = instance.execute([_request(*TEXTS, outputs=("ANALYSIS", "EMBEDDING"))])
        return [json.loads(a) for a in response.tensors[0][1].reshape(-1)], response.tensors[1][1]

    (got, got_embedding), (want, want_embedding) = answers("fp16"), answers("fp32")
    assert got_embedding.shape == (len(TEXTS), 384)
    assert np.linalg.norm(want_embedding.astype(np.float32), axis=1) == pytest.approx(1.0, abs=2e-3)
    assert got_embedding.astype(np.float32) == pytest.approx(want_embedding.astype(np.float32), abs=1e-2)
    assert [a["sentiment"]["label"] for a in got] == [a["sentiment"]["label"] for a in want]
    assert [[(e["start"], e["end"], e["type"]) for e in a["entities"]] for a in got] == \
        [[(e["start"], e["end"], e["type"]) for e in a["entities"]] for a in want]
    for g, w in zip(got, want, strict=True):
        assert g["sentiment"]["probs"] == pytest.approx(w["sentiment"]["probs"], abs=0.01)


TEXTS = ["Apple is opening a new store in Berlin, said Tim Cook.", "Terrible. Broke in a day.",
         "The package arrived on Tuesday.", "Samsung unveiled the Galaxy S24 in Seoul; Lisa Su was there."]


def test_each_request_gets_the_offsets_of_its_own_domain(model):
    """Reviews and news merged into one call: only the reviews are shifted (the version's
    neutral offset is fitted on reviews), and a request naming no known domain is not."""
    reviews, news, bare, odd = model.execute([
        _request("r1", "r2", parameters='{"domain": "reviews"}'), _request("n1", parameters='{"domain": "news"}'),
        _request("b1"), _request("x1", parameters="not json")])
    assert reviews.tensors[0][1].reshape(-1).tolist() == ["analysis of r1 shifted -0.5", "analysis of r2 shifted -0.5"]
    assert [r.tensors[0][1].reshape(-1).tolist() for r in (news, bare, odd)] == [
        ["analysis of n1"], ["analysis of b1"], ["analysis of x1"]]
    # ... also when a poisoned request makes every request run alone
    alone = model.execute([_request("r3", parameters='{"domain": "reviews"}'), _request("POISON")])
    assert alone[0].tensors[0][1].reshape(-1).tolist() == ["analysis of r3 shifted -0.5"]

"""Property-based tests of the input decoder (hypothesis): whatever the bytes, decoding
returns a record or a reason, never raises, gives what the reference decoder gives (the fast
path may only ever be faster), and every malformed record of the fuzz generator is rejected
with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.records import DecodeError, decode_input, encode, parse_input
from streams.testing import malformed_records, synthetic_events

TOPICS = ["reviews", "clicks", "news"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30)


@pytest.mark.parametrize("topic", TOPICS)
@given(raw=st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_to_a_record_or_a_reason(topic: str, raw: bytes):
    result = decode_input(topic, raw)
    assert not isinstance(result, DecodeError) or result.reason


@pytest.mark.parametrize("topic", TOPICS)
@given(value=json_values)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_json_decodes_to_a_record_or_a_reason(topic: str, value):
    result = decode_input(topic, json.dumps(value).encode())
    assert not isinstance(result, DecodeError) or result.reason


@pytest.mark.parametrize("topic", TOPICS)
@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_valid_records_with_extra_fields_survive_and_keep_them(topic: str, data):
    record = dict(next(synthetic_events(topic, 1, seed=data.draw(st.integers(0, 10_000)))))
    extra = data.draw(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in record),
                                      st.integers() | st.text(max_size=20), max_size=3))
    result = decode_input(topic, json.dumps({**record, **extra}).encode())
    assert not isinstance(result, DecodeError), result
    assert {k: v for k, v in json.loads(encode(result)).items() if k in extra} == extra


@pytest.mark.parametrize("topic", TOPICS)
def test_every_malformed_record_of_the_fuzzer_is_rejected_with_a_reason(topic: str):
    for kind, raw in malformed_records(topic, 3000, seed=5):
        result = decode_input(topic, raw)
        assert isinstance(result, DecodeError) and result.reason, (kind, raw[:200])


# Tokens and shapes where two JSON parsers could disagree (what the fast path must leave to
# the reference): non-finite numbers, a byte-order mark, repeated keys, out-of-range and
# odd numbers, lone surrogates, trailing data, nesting (past the limit too), null bytes.
_ODD_VALUES = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "01", "-0", "1E9",
               "99999999999999999999999", "true", "null", '"NaN"', '"\\ud800"', '"a\\u0000b"', '""',
               '{"a": [[[[1]]]]}', "[]", "1.5e9", '"2026-01-01T00:00:00Z"', "-1", "[" * 40 + "]" * 40]


@pytest.mark.parametrize("topic", TOPICS)
@given(data=st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_path_decodes_exactly_as_the_reference(topic: str, data):
    record = dict(next(synthetic_events(topic, 1, seed=data.draw(st.integers(0, 10_000)))))
    fields = [json.dumps(k) + ": " + json.dumps(v) for k, v in record.items()]
    for _ in range(data.draw(st.integers(0, 3))):  # some fields odd, missing, repeated or extra
        key = data.draw(st.sampled_from([*record, "extra", "ts"]))
        value = data.draw(st.sampled_from(_ODD_VALUES) | json_values.map(json.dumps))
        how = data.draw(st.sampled_from(["replace", "drop", "add"]))
        pair = json.dumps(key) + ": " + value
        if how == "add" or not fields:
            fields.append(pair)
        else:
            fields[data.draw(st.integers(0, len(fields) - 1))] = pair if how == "replace" else ""
    text = "{" + ", ".join(f for f in fields if f) + "}"
    text = data.draw(st.sampled_from(["", "\ufeff", " "])) + text + data.draw(st.sampled_from(["", " ", "x"]))
    raw = text.encode("utf-8", "surrogatepass")
    fast, reference = decode_input(topic, raw), parse_input(topic, raw)
    assert type(fast) is type(reference) and fast == reference, (raw, fast, reference)


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("odd", _ODD_VALUES)
def test_each_odd_token_decodes_as_the_reference_decodes_it(topic: str, odd: str):
    record = json.dumps(dict(next(synthetic_events(topic, 1, seed=3))))
    for text in (record[:-1] + ', "extra": ' + odd + "}", record[:-1] + ', "ts": ' + odd + "}",
                 "\ufeff" + record, record + " x"):
        raw = text.encode("utf-8", "surrogatepass")
        fast, reference = decode_input(topic, raw), parse_input(topic, raw)
        assert type(fast) is type(reference) and fast == reference, (raw, fast, reference)

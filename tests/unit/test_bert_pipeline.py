"""Pure parts of models/bert: tokenisation features, tag alignment, span decoding, metrics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.pre_tokenizers import BertPreTokenizer

from models.bert.corpus import Span, generated_sentences
from models.bert.data import LabelledText
from models.bert.evaluate import entity_f1, parse_gold
from models.bert.pipeline import TAGS, casing_class, decode_entities, encode
from models.bert.train import split_corpus, tag_ids


def probs_for(tags: list[str]) -> np.ndarray:
    out = np.full((len(tags), len(TAGS)), 0.01)
    for i, tag in enumerate(tags):
        out[i, TAGS.index(tag)] = 0.9
    return out


def test_decoding_merges_pieces_and_widens_to_words():
    text = "Tim Cook visited Berlin."
    offsets = [(0, 0), (0, 3), (4, 8), (9, 16), (17, 20), (20, 23), (23, 24), (0, 0)]
    tags = ["O", "B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]
    ents = decode_entities(text, probs_for(tags), offsets)
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in ents] == [
        ("Tim Cook", "PER", 0, 8), ("Berlin", "LOC", 17, 23)]
    assert all(0.8 < e["score"] <= 1 for e in ents)


def test_decoding_starts_a_new_entity_on_a_type_change_or_a_new_b_tag():
    text = "Apple Berlin"
    offsets = [(0, 5), (6, 12)]
    assert [e["type"] for e in decode_entities(text, probs_for(["B-ORG", "I-LOC"]), offsets)] == ["ORG", "LOC"]
    assert len(decode_entities(text, probs_for(["B-ORG", "B-ORG"]), offsets)) == 2
    assert decode_entities(text, probs_for(["O", "O"]), offsets) == []


def test_tag_alignment_uses_character_spans():
    offsets = [(0, 0), (0, 5), (6, 8), (9, 11), (11, 14), (0, 0)]  # "Apple is Be|rlin"
    spans = (Span(0, 5, "ORG", "Apple"), Span(9, 14, "LOC", "Berlin"))
    assert [TAGS[i] if i >= 0 else None for i in tag_ids(offsets, spans)] == [
        None, "B-ORG", "O", "B-LOC", "I-LOC", None]


def test_casing_classes():
    assert [casing_class(w) for w in ("", "apple", "Apple", "NASA", "iPhone", "A", "42")] == [0, 1, 2, 3, 4, 2, 0]


def test_split_keeps_augmented_copies_together():
    texts = [LabelledText(f"g{i % 50}", f"text {i}", "neutral") for i in range(500)]
    train, held = split_corpus(texts, heldout_fraction=0.2, seed=1)
    assert {t.group for t in train}.isdisjoint({t.group for t in held})
    assert len({t.group for t in held}) == 10


def test_generated_sentences_have_exact_spans():
    for s in generated_sentences(300, seed=5):
        for e in s.entities:
            assert s.text[e.start:e.end] == e.text and e.type in ("PER", "ORG", "LOC", "PRODUCT")
            assert not e.text.startswith(("the ", "The "))


def test_gold_set_parses_and_f1_counts_exact_matches():
    gold = parse_gold()
    assert len(gold) >= 30
    text, spans = gold[0]
    assert text == "Apple is opening a new store in Berlin, said Tim Cook."
    assert [(text[s.start:s.end], s.type) for s in spans] == [("Apple", "ORG"), ("Berlin", "LOC"), ("Tim Cook", "PER")]
    pred = [[{"start": 0, "end": 5, "type": "ORG"}, {"start": 32, "end": 38, "type": "PER"}]]
    scores = entity_f1([spans], pred)
    assert scores["precision"] == 0.5 and scores["recall"] == pytest.approx(1 / 3)


def test_generated_heldout_part_uses_unseen_templates_and_names():
    train_names = {e.text for s in generated_sentences(2000, seed=1) for e in s.entities}
    held = generated_sentences(300, seed=2, part="heldout")
    held_names = {e.text for s in held for e in s.entities}
    assert held_names and not held_names & {n for n in train_names if " " not in n}
    with pytest.raises(ValueError):
        generated_sentences(1, part="test")


def test_context_tagger_answers_do_not_depend_on_the_batch():
    """Padding is zeroed after each layer, so a text tagged alone or next to a longer text
    (Triton's dynamic batcher pads to the longest) gets the same logits."""
    torch = pytest.importorskip("torch")
    from models.bert.network import ContextTagger

    torch.manual_seed(0)
    tagger = ContextTagger(8, n_tags=len(TAGS), casing_classes=5, casing_dim=4, width=6, kernel=5, layers=2).eval()
    hidden, casing = torch.randn(2, 9, 8), torch.randint(0, 5, (2, 9))
    mask = torch.ones(2, 9, 1)
    mask[0, 4:] = 0  # the first text has 4 tokens, the second 9
    together = tagger(hidden, casing, mask)
    alone = tagger(hidden[:1, :4], casing[:1, :4], mask[:1, :4])
    assert torch.allclose(together[0, :4], alone[0], atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("aZ É1-.'ßİı😀 \tñÑxX"), max_size=40), min_size=1, max_size=6))
def test_encode_gives_each_word_piece_its_own_casing_class(texts):
    """The remembered casing classes (a cache over pieces) are exactly the per-piece definition."""
    tokenizer = Tokenizer(WordPiece({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "a": 4, "##a": 5},
                                    unk_token="[UNK]"))
    tokenizer.pre_tokenizer = BertPreTokenizer()
    enc = encode(tokenizer, texts, max_length=16)
    for i, text in enumerate(texts):
        want = [casing_class(text[s:e]) if e > s else 0 for s, e in enc.offsets[i]]
        assert enc.casing[i, :len(want)].tolist() == want
        assert not enc.casing[i, len(want):].any()


def test_the_two_training_stages_are_cached_apart():
    """A change to stage 2 (a tagger_* field) retrains only stage 2; one to stage 1 retrains both."""
    from dataclasses import replace

    from models.bert.train import TrainConfig, cache_key, encoder_key

    base = TrainConfig()
    tagger_change, encoder_change = replace(base, tagger_epochs=4), replace(base, epochs=2)
    assert encoder_key(tagger_change) == encoder_key(base)
    assert cache_key(tagger_change) != cache_key(base)
    assert encoder_key(encoder_change) != encoder_key(base)
    assert cache_key(encoder_change) != cache_key(base)

import bz2

from models.bert import data, train
from models.bert.prose import sentences, wiki_sentences, wikitext_paragraphs

DUMP = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
  <page><title>Ada Lovelace</title><revision><text>{{Infobox person|name={{nowrap|Ada}}}}
'''Ada Lovelace''' was an English mathematician who worked with [[Charles Babbage]] in London.&lt;ref&gt;Toole, p. 3&lt;/ref&gt;
{| class="wikitable"
| 1815 || born
|}
== Work ==
[[File:Ada.jpg|thumb|A [[portrait]] of Ada]]
She wrote about the [[Analytical Engine|analytical engine]] for a journal in 1843. See also [http://example.org the notes].
* Lovelace, Ada. Sketch of the Analytical Engine. 1843.
[[Category:Mathematicians]]</text></revision></page>
  <page><title>Lovelace</title><revision><text>#REDIRECT [[Ada Lovelace]]</text></revision></page>
</mediawiki>"""


def test_wiki_dump_gives_clean_sentences_per_article(tmp_path):
    dump = tmp_path / "dump.xml.bz2"
    dump.write_bytes(bz2.compress(DUMP.encode()))
    assert list(wiki_sentences(dump)) == [
        ("Ada Lovelace", "Ada Lovelace was an English mathematician who worked with Charles Babbage in London."),
        ("Ada Lovelace", "She wrote about the analytical engine for a journal in 1843."),
    ]


def test_markup_never_survives_into_paragraphs():
    text = "{{a|{{b|{{c}}}}}}Text with [[a|[[nested]] link]] and <b>bold</b> and ''italic''.\n| table row"
    assert wikitext_paragraphs(text) == ["Text with nested link and bold and italic."]
    assert wikitext_paragraphs("An [[unbalanced link in a line.") == []
    assert wikitext_paragraphs("Plain ''italic'' and <b>bold</b> words &amp; more.") == [
        "Plain italic and bold words & more."]


def test_sentence_splitting_keeps_titles_initials_and_abbreviations_inside():
    text = ("Mr. J. R. Smith of Acme Corp. met Gen. Lee in Washington. The U.S. economy grew by 3% in 2001. "
            "Was it enough? \"Yes,\" he said today in Paris.")
    assert sentences(text, min_words=4) == [
        "Mr. J. R. Smith of Acme Corp. met Gen. Lee in Washington.",
        "The U.S. economy grew by 3% in 2001.",
        "\"Yes,\" he said today in Paris.",
    ]


def test_packaged_prose_is_split_by_article():
    prose = data.prose()
    groups = {p.group.split("-")[0] for p in prose}
    assert groups == {"wiki", "news"} and len(prose) > 15_000
    assert not any(markup in p.text for p in prose for markup in ("{{", "}}", "[[", "]]", "|", "<ref"))
    config = train.TrainConfig()
    held = train.heldout_prose(config)
    trained, _ = train.split_corpus(prose, heldout_fraction=config.heldout_fraction, seed=config.seed)
    assert len(held) > 1_000
    assert not {p.group for p in held} & {p.group for p in trained}

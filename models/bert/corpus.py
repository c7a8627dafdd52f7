"""Entity-rich sentences whose entities are known by construction (product and news prose).

Packaged text (tweets, drug reviews) has few well-formed organisation, place and person names;
these sentences add them with exact character spans, so the tagger sees every entity type in
the contexts our users stream.

>>> s = generated_sentences(1, seed=3)[0]
>>> all(s.text[e.start:e.end] == e.text for e in s.entities)
True
>>> held = generated_sentences(50, seed=3, part="heldout")
>>> {e.text for h in held for e in h.entities} & set(_ORGS[:4])
set()
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
          "Sophie", "Ahmed", "Ingrid", "Kenji", "Lucia", "Noah", "Olivia", "Mateo", "Hana", "Ivan",
          "Grace", "Omar", "Nadia", "Pedro", "Aisha", "Tomasz", "Freya", "Rahul", "Sven", "Mei",
          "Jonas", "Beatriz", "Kwame", "Laura", "Hiroshi", "Zainab", "Viktor", "Camille", "Ethan", "Leila"]
_LAST = ["Cook", "Barra", "Nadella", "Su", "Huang", "Merkel", "Scholz", "Macron", "Harris", "Sunak",
         "Rossi", "Tanaka", "Sharma", "Garcia", "Haddad", "Nilsson", "Wei", "Okafor", "Lopez",
         "Martin", "Khan", "Berg", "Sato", "Fernandez", "Smith", "Johnson", "Brown", "Petrov",
         "Kowalski", "Mensah", "Dubois", "Yamamoto", "Novak", "Andersen", "Silva", "Murphy", "Weber",
         "Ivanova", "Nguyen", "Costa", "Schmidt", "Ali", "Jensen", "Moreau", "Park", "Edwards"]
_ORGS = ["Apple", "Microsoft", "Siemens", "Toyota", "Unilever", "Samsung", "Nestle", "Amazon",
         "Google", "Volkswagen", "Pfizer", "Reuters", "the European Central Bank", "IKEA", "Sony",
         "Intel", "Nvidia", "Boeing", "Airbus", "Walmart", "Tesla", "BMW", "Philips", "Nokia",
         "the World Health Organization", "Goldman Sachs", "Deutsche Bank", "Spotify", "Adidas",
         "the Federal Reserve", "Netflix", "Shell", "Bayer", "Zara", "Lufthansa", "Ericsson",
         "Honda", "Carrefour", "Heineken", "Oracle", "Uber", "Airbnb", "Ford", "Nike", "Danone",
         "Barclays", "the United Nations", "HSBC", "Panasonic", "Lenovo", "Dell", "Vodafone",
         "Starbucks", "McDonald's", "Target", "Costco", "Best Buy", "the Bank of England", "Audi"]
_PLACES = ["Berlin", "Tokyo", "Paris", "Chicago", "Madrid", "Seoul", "London", "New York", "Munich",
           "Brazil", "India", "Germany", "France", "Texas", "California", "Shanghai", "Nairobi",
           "Toronto", "Sydney", "Mexico City", "Stockholm", "Dubai", "Singapore", "Lagos", "Rome",
           "Warsaw", "Vienna", "Boston", "Japan", "Canada", "Italy", "Spain", "Kenya", "Ohio",
           "Amsterdam", "Lisbon", "Osaka", "Seattle", "Denver", "Cairo", "Istanbul", "Hamburg",
           "Vietnam", "Poland", "Norway", "Florida", "Melbourne", "Mumbai", "Johannesburg", "Chile"]
_PRODUCTS = ["iPhone 15", "Galaxy S24", "PlayStation 5", "Model 3", "Kindle", "Xbox", "Pixel 8",
             "MacBook Air", "AirPods", "Surface Pro", "Walkman", "Prius", "Golf", "Windows 11",
             "Echo Dot", "Fire TV", "ThinkPad", "Switch", "iPad Pro", "Galaxy Buds", "Apple Watch",
             "Roomba", "GoPro Hero 12", "Nintendo Switch", "Model Y", "Civic", "Fitbit Charge 6",
             "Steam Deck", "Kindle Paperwhite", "Chromebook", "Mustang", "Oculus Quest"]

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
    "{ORG} said on Monday that {PER} would step down as chairman.",
    "The {PRODUCT} I ordered from {ORG} came with a cracked screen.",
    "{PER} told reporters in {LOC} that the deal with {ORG} was close.",
    "Workers at the {ORG} factory in {LOC} voted to strike.",
    "honestly the {PRODUCT} is overrated, my friend in {LOC} returned hers too",
    "{ORG} shares jumped 8% in {LOC} trading after the earnings call.",
    "We flew from {LOC} to {LOC} and {ORG} lost our luggage.",
    "In an interview, {PER} said {ORG} had no plans to leave {LOC}.",
    "Five stars for the {PRODUCT}, it replaced my old one from {ORG}.",
    "{LOC} will host the summit, {PER} announced after talks with {PER}.",
    "The {ORG} store in {LOC} had the {PRODUCT} in stock, unlike everywhere else.",
    "{PER} joined {ORG} in {LOC} as head of research last spring.",
    "Customers in {LOC} complained that the {PRODUCT} overheats.",
    "{ORG} agreed to pay a fine to settle the case, {PER} said in {LOC}.",
    "Just got the {PRODUCT} and the battery already drains overnight, thanks {ORG}",
    "A spokesperson for {ORG} in {LOC} declined to comment.",
    "{PER} criticised {ORG} for raising the price of the {PRODUCT}.",
    "Inflation in {LOC} slowed in March, according to {ORG}.",
    "The new {PRODUCT} goes on sale in {LOC} and {LOC} next week.",
    "{PER} and {PER} founded {ORG} in {LOC} in 2009.",
]


def _part(items: list, part: str) -> list:
    """Every fifth template and name is held out: evaluation sentences (``part="heldout"``)
    use templates and names the tagger never saw, so their score measures generalisation."""
    if part not in ("train", "heldout"):
        raise ValueError(f"part must be 'train' or 'heldout', not {part!r}")
    return [x for i, x in enumerate(items) if (i % 5 == 4) == (part == "heldout")]


def generated_sentences(n: int, *, seed: int = 0, part: str = "train") -> list[TaggedText]:
    """``n`` sentences with their entity spans, from the ``train`` or ``heldout`` templates and names."""
    rng = random.Random(seed)
    first, last = _part(_FIRST, part), _part(_LAST, part)
    orgs, places, products = _part(_ORGS, part), _part(_PLACES, part), _part(_PRODUCTS, part)
    templates = _part(_TEMPLATES, part)
    fillers = {"PER": lambda: f"{rng.choice(first)} {rng.choice(last)}", "ORG": lambda: rng.choice(orgs),
               "LOC": lambda: rng.choice(places), "PRODUCT": lambda: rng.choice(products)}
    out = []
    for _ in range(n):
        template = rng.choice(templates)
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

"""Online models: for the click stream (River: candidates, click-through ranking, segments), for
the sentiment of the user's domain (the adapter) and for what texts are about (themes)."""

from models.online.background import TextBackground
from models.online.candidates import CoVisitation, Popularity
from models.online.keywords import characteristic_words, words_of
from models.online.recommender import ACTIONS, ClickEvent, ClickRecommender, Step, UserState
from models.online.simulate import SimulatedClicks, simulate_clicks
from models.online.themes import ThemeShare, ThemeTracker

__all__ = [
    "ACTIONS",
    "ClickEvent",
    "ClickRecommender",
    "CoVisitation",
    "Popularity",
    "SimulatedClicks",
    "Step",
    "TextBackground",
    "ThemeShare",
    "ThemeTracker",
    "UserState",
    "characteristic_words",
    "simulate_clicks",
    "words_of",
]

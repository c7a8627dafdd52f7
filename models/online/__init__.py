"""Online models for the click stream (River): candidates, click-through ranking, segments."""

from models.online.candidates import CoVisitation, Popularity
from models.online.recommender import ACTIONS, ClickEvent, ClickRecommender, Step, UserState
from models.online.simulate import SimulatedClicks, simulate_clicks

__all__ = [
    "ACTIONS",
    "ClickEvent",
    "ClickRecommender",
    "CoVisitation",
    "Popularity",
    "SimulatedClicks",
    "Step",
    "UserState",
    "simulate_clicks",
]

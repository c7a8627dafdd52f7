"""Sequential tests and drift detectors with stated false-alarm guarantees (River's detector shape)."""

from models.sequential.confidence import bernoulli_confidence_sequence, beta_upper_quantile
from models.sequential.cusum import BernoulliCUSUM, PoissonCUSUM
from models.sequential.drift import DriftEvent, StreamDriftMonitor, text_features
from models.sequential.sentiment_shift import SentimentShiftDetector, ShiftSummary
from models.sequential.surge import MentionSurgeDetector

__all__ = [
    "BernoulliCUSUM",
    "DriftEvent",
    "MentionSurgeDetector",
    "PoissonCUSUM",
    "SentimentShiftDetector",
    "ShiftSummary",
    "StreamDriftMonitor",
    "bernoulli_confidence_sequence",
    "beta_upper_quantile",
    "text_features",
]

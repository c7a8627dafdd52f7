"""Sequential tests and drift detectors with stated false-alarm guarantees."""

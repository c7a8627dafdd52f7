"""BERT models for sentiment and named entities: data, training, evaluation, export to Triton."""

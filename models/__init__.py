"""StreamSense ML, importable without Kafka or Triton: BERT, River models, sequential tests."""

"""I/O at the edges: Kafka admin and clients (Triton and metrics arrive with the text path)."""

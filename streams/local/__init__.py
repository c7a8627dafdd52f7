"""The local stack for one machine: Kafka from Maven Central, Triton from nvidia-pytriton."""

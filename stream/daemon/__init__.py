"""The long-lived ``streamcl serve`` daemon: Kafka in, learning, checkpoints, metrics out."""

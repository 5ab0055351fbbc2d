"""Training: configuration, losses, schedules, checkpoints and the trainer loop."""

"""Training: arguments, stages, the Trainer subclass and the ``piip-llava train`` entry point."""

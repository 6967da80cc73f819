"""Run folders, checkpoints with exact resume, metrics loggers, seeding, distributed glue."""

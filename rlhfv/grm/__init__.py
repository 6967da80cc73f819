"""Generative reward models: prompts, output parsing, reward rules, voting, meta-RM and R*."""

"""Reward shaping for intrinsic motivation (ADOPS and baselines) with PPO + RND; no LLM imports."""

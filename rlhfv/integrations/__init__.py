"""Adapters that let other trainers use rlhfv's judges through `rlhfv serve grm`:
`rlhfv.integrations.trl` (GRPOTrainer's `reward_funcs`) and `rlhfv.integrations.verl` (a custom
reward function). OpenRLHF needs no adapter: pass the server as `--remote_rm_url
http://HOST:PORT/get_reward`."""

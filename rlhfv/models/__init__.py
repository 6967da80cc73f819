"""Model builders. Each returns a `ChatModel`: the module plus what turns prompts into tensors.

Builders (use them as `_component_` targets in recipes):
- `rlhfv.models.hf_vlm.load_hf_vlm` and the `tiny_*` builders next to it
- `rlhfv.models.clip_lm.build_clip_lm`, `tiny_clip_lm` (tests), `load_clip_lm`
- `rlhfv.models.text_lm.load_text_lm`, `tiny_text_lm`
- `rlhfv.models.base.load_model`: any folder written by `save_model`
"""

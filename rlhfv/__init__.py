"""rlhfv: multimodal RLHF with generative reward models.

Importing the package is cheap: heavy libraries (transformers, deepspeed, streamlit, gymnasium,
open_clip) are imported inside the modules that need them.
"""

__version__ = "0.1.0"

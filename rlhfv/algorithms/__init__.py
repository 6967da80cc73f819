"""Pure tensor maths of the RL algorithms: no I/O, no models."""

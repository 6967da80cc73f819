"""One module per training procedure; each reads top to bottom as a plain loop."""

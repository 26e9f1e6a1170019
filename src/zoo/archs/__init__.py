"""Architectures, shared layers and the built-in catalogue; imported per family, on demand."""

"""Decoder layers of the supported architectures: find, remove and replace them, and read their hidden states."""

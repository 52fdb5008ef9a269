"""Wire codecs: protocol bodies <-> NumPy tensors. No web framework is imported here."""

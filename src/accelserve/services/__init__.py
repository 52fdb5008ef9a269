"""Serving logic a frontend needs beyond the data plane (embeddings: chunking, padding,
normalization); below the frontends, above the data plane, with no wire format."""

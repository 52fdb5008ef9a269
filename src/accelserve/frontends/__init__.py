"""Protocol frontends: thin adapters between a wire format and the data plane."""

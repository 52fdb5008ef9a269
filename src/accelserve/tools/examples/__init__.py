"""``accelserve prepare-examples``: build the example repository's model files."""

"""``accelserve export``: turn a trained model into model-repository entries."""

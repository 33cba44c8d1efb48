"""Token lists and subword models for ESPnet training."""

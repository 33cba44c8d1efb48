"""The ASR model with KD decoders."""

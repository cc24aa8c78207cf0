"""Video decoding, datasets and the sampling strategies that turn a video into model input."""

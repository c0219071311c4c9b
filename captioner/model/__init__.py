"""The captioning model: encoders, attention, the LSTM decoder, caption search, checkpoints and the model registry."""

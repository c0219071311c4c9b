"""Attention heatmaps: upsampled maps blended over the photo, as PNG, GIF and a self-contained HTML report."""

"""Attention heatmaps: upsampled maps blended over the photo, as PNG, GIF and a self-contained HTML report."""

from .figures import layout, render_gif, render_heatmap
from .overlay import AttentionScale, attention_scale, overlay, percent, upsample_attention
from .report import data_uri, render_html_report

__all__ = ["AttentionScale", "attention_scale", "data_uri", "layout", "overlay", "percent", "render_gif", "render_heatmap",
           "render_html_report", "upsample_attention"]

"""Data in: dataset formats (COCO, Karpathy, Flickr8k), safe image loading, the vocabulary, the feature cache, synthetic data."""

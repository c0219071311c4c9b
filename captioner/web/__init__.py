"""`captioner serve`: the local web page and its HTTP API."""

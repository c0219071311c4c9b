"""The `captioner` command: thin argparse layers over the library, progress bars and the JSON output contract."""

"""`python -m captioner` is the `captioner` command."""

import sys

from .cli import main

sys.exit(main())

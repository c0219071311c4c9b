"""`python -m captioner` is the `captioner` command."""

import sys

from .cli.main import main

sys.exit(main())

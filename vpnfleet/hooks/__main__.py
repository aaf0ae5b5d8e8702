"""`python -m vpnfleet.hooks`: the same as `vpnfleet-hook`."""

import sys

from .cli import main

sys.exit(main())

"""``python -m proxy.cli``: the same as the ``labgate`` script."""

import sys

from proxy.cli import main

sys.exit(main())

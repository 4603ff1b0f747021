"""`python -m edge_client run --config PATH` (same as the `facepipe-edge` script)."""

import sys

from edge_client.cli import main

sys.exit(main())

"""`python -m cloud.functions enroll|gallery ...`: the commands the Lambda image runs besides its handlers."""

import sys

from cloud.functions.commands import main

sys.exit(main())

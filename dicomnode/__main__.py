"""``python -m dicomnode`` → :func:`dicomnode.cli.main`."""

import sys

from dicomnode.cli import main

sys.exit(main())

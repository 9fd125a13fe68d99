import sys

from bsr_cli.cli import main

sys.exit(main())

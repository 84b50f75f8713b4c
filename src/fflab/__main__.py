import sys

from fflab.cli import main

sys.exit(main())

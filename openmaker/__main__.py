import sys

from openmaker.cli import main

sys.exit(main())

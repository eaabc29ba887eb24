import sys

from detrlib.cli import main

sys.exit(main())

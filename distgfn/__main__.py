import sys

from distgfn.cli import main

sys.exit(main())

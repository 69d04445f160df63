"""`python -m cai`: the same command line as the `cai` script."""
import sys

from cai.cli import main

sys.exit(main())

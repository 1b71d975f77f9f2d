import sys

from jobs.process import main

sys.exit(main())

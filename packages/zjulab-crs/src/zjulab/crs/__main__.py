import sys

from zjulab.crs.cli import main

sys.exit(main())

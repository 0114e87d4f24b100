import sys

from cri.server.cli import main

sys.exit(main())

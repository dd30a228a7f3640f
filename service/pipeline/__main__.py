import sys

from service.pipeline.cli import main

sys.exit(main())

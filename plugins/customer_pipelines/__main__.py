import sys

from customer_pipelines.cli import main

sys.exit(main())

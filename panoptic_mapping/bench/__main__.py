import sys

from panoptic_mapping.bench.runner import main

sys.exit(main())

import sys

from piip_llava.cli import main

sys.exit(main())

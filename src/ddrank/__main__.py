import sys

from ddrank.cli import main

sys.exit(main())

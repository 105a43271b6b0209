"""`python -m fmnist`: the command line of the fmnist library."""

from fmnist.cli import main

raise SystemExit(main())

"""`python -m modalign ...` (also `torchrun -m modalign ...`): the same CLI as `modalign`."""

from modalign.cli import main

raise SystemExit(main())

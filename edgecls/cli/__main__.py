"""`python -m edgecls.cli` (as torchrun runs it) is `edgecls`."""

from edgecls.cli.app import main

main()

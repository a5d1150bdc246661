"""The `edgecls` command line: parse, build a config, call one library function, print.

This is the only package that knows about click: one module per command group (:mod:`~edgecls.cli.train`,
:mod:`~edgecls.cli.data`, :mod:`~edgecls.cli.export`, :mod:`~edgecls.cli.runtime`, :mod:`~edgecls.cli.bench`), the
options built from the config dataclasses in :mod:`~edgecls.cli.options`, and library errors turned into one-line
messages in :mod:`~edgecls.cli.errors`. Heavy modules are imported inside the commands so `edgecls --help` stays fast.
"""

from edgecls.cli.app import cli, main

__all__ = ["cli", "main"]

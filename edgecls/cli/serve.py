"""`edgecls serve`: a thin click command over :func:`edgecls.serve.run_server`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from edgecls.cli.errors import user_errors
from edgecls.cli.options import ConfigCommand, options_from
from edgecls.cli.options import given as given_flags


def _serve_options() -> list[click.Option]:
    from edgecls.serve.config import ServeConfig

    return options_from(ServeConfig)


@click.command(cls=ConfigCommand, options=_serve_options, last=True)
@click.argument("bundle", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file; keys mirror these flags")
@user_errors
def serve(bundle: str | None, config_path: str | None, **flags: Any) -> None:
    """Serve BUNDLE over HTTP: POST /v1/classify, KServe v2 under /v2, /metrics, OpenAPI at /docs.

    Binds 127.0.0.1:8000 by default; a non-loopback --host needs --api-key (or $EDGECLS_API_KEY) unless --insecure.
    SIGTERM (or Ctrl-C) finishes the requests in flight and exits 0."""
    from edgecls.config import build_config, load_yaml
    from edgecls.errors import ConfigError
    from edgecls.serve.config import API_KEY_ENV, ServeConfig
    from edgecls.serve.server import run_server

    given = given_flags(flags)
    if bundle is not None:
        given["bundle"] = bundle
    in_yaml = {str(k).replace("-", "_") for k in load_yaml(config_path)} if config_path else set()
    if "bundle" not in given and "bundle" not in in_yaml:
        raise ConfigError("serve needs a bundle: edgecls serve BUNDLE (or `bundle:` in --config)")
    if "api_key" not in given and "api_key" not in in_yaml and os.environ.get(API_KEY_ENV):
        given["api_key"] = os.environ[API_KEY_ENV]
    cfg = build_config(ServeConfig, yaml_path=config_path, overrides=given)
    sys.exit(run_server(cfg))


def register(group: click.Group) -> None:
    """Add `serve` to ``group``."""
    group.add_command(serve)

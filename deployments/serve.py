"""Serve every deployment of a project in this process: `python -m deployments.serve -c FILE`."""

from __future__ import annotations

import argparse

from ctloop.config.settings import load_config
from ctloop.stores.home import activate, home_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", "-c", required=True, help="path to ctloop.yaml")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    activate(home_of(config).ensure())  # before Prefect is imported
    from deployments.definitions import serve_deployments

    serve_deployments(config)


if __name__ == "__main__":
    main()

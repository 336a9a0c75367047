"""`python -m workflows ...`: the `landcover` CLI with the regional-run commands mounted."""

from pipeline import cli
from workflows.cli import register

if __name__ == "__main__":
    register(cli.app)
    cli.main()

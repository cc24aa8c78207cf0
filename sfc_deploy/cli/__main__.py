"""``python -m sfc_deploy.cli``: the ``sfc-deploy`` command, runnable as a module (what torchrun's ``-m`` needs)."""

from sfc_deploy.cli import main

main()

"""``python -m pie_audit``: the same as the ``pie-audit`` command."""

from .cli import main

if __name__ == "__main__":
    main()

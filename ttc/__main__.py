"""``python -m ttc``: the ``ttc`` command line."""

from ttc.orchestrator.cli import main

if __name__ == "__main__":
    main()

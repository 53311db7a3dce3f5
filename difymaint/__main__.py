"""``python -m difymaint`` entry point."""

from difymaint.cli.app import main

if __name__ == "__main__":
    main()

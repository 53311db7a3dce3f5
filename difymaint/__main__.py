"""``python -m difymaint`` entry point."""

from difymaint._entry import main

if __name__ == "__main__":
    main()

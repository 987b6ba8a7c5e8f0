"""`python -m sandbox`: run the sandbox web server (see `sandbox.server`)."""

from sandbox.server import main

if __name__ == "__main__":
    main()

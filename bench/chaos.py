"""The fault suite, from the command line (`make chaos`): tests/support/chaos.py says what it does.

    .venv/bin/python -m bench.chaos [--seconds 60] [--rate 20] [--broker tansu|kafka]

The end-to-end tests run the same fault suite, shorter; it lives with the tests'
support so that bench imports tests/support and never the other way round.
"""

from tests.support.chaos import main

if __name__ == "__main__":
    main()

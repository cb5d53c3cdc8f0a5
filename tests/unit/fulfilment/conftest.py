import pytest

from services.fulfilment.postcodes import PostcodeDirectory


@pytest.fixture(scope="session")
def directory() -> PostcodeDirectory:
    """The real ONS directory, built once as the service builds it at start-up."""
    return PostcodeDirectory.load()

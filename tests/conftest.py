"""Fixtures shared by test files: a file opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy shared CPU extra threads only wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""The test session's torch thread count survives a test that changes it (tests/conftest.py puts it back): scripts
called in-process set it from their ``--threads``, and without the guard every later test ran on one core.

The two tests run in file order; the second fails if the first one's change leaks into it."""

import torch

BEFORE = torch.get_num_threads()


def test_a_test_may_change_the_thread_count():
    torch.set_num_threads(BEFORE + 1)  # a different count on any machine
    assert torch.get_num_threads() == BEFORE + 1


def test_the_next_test_sees_the_sessions_count_again():
    assert torch.get_num_threads() == BEFORE

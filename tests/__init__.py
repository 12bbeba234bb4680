"""z4node's test suite, run by trial through tox."""

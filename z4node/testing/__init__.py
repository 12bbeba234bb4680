"""In-memory fakes of z4node's seams, for tests (ours and users').

Each fake implements the same zope Interface as the real thing and runs on
an injected clock, so a test can start a whole cluster in milliseconds.
"""

"""Local storage: content-addressed chunk files and the SQLite metadata
store. Knows nothing of peers or of S3.
"""

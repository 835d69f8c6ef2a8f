"""Deliveries: a department's file received (over HTTP or from a watched folder), kept with its checksum and
sender, and loaded by the refresh job as an async job in ops.jobs, its result (counts, conflicts, rejects) kept
with it. store.py holds the records and the job; unpack.py turns the bytes into the file the refresh reads.
"""

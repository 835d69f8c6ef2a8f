"""Access control: the policy (who may read which layers, fields and rows), API keys, audit records.

Knows nothing of HTTP; services/auth/ turns requests into callers and enforces it.
"""

"""Feature edits with history: one feature created, replaced, patched or deleted at a time.

feature.py checks an edited feature with the refresh's own normalise and validate (a one-row batch);
store.py writes it on the primary in one transaction: the old version closed into history, the change
log (ops.edits), the layer's version (ops.refresh_log, ops.layer_stats) and the audit row.
"""

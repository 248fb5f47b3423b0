"""The producer side: which videos to queue, queueing them in batches, and waiting for them.

:mod:`.enqueue` plans and sends, :mod:`.interrupts` keeps a Ctrl-C from splitting a batch,
:mod:`.wait` polls the ledger until the videos end (how progress is shown is the caller's).
"""

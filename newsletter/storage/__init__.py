"""What must survive a crash: the ledger and the send lock."""

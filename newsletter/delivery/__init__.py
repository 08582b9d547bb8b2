"""The send: campaign, messages, batches, providers, the report."""

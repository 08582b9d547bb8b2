"""Who may get an issue: subscriber lists, addresses, unsubscribe tokens."""

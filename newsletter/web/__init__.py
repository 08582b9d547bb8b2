"""What a browser sees: the preview and the web archive."""

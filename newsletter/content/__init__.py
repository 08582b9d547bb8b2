"""Issue files to rendered mail: load, validate, render once, check."""

"""One adapter per upstream protocol."""

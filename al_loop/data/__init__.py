"""Data: label schema, readers and span/token alignment (numpy only, no torch)."""

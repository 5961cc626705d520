"""The revisions, oldest first: ``v1_baseline`` (the schema of al-loop 0.1, adopting older databases)."""

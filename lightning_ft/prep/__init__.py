"""The `lightning-ft data` tools: records in (any training layout and file type), records and a JSON report out."""

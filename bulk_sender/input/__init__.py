"""Reading a campaign: files and frames -> checked, deduplicated, planned messages."""

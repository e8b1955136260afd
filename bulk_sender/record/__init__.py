"""What a run records: the journal, the run lock, the results file and the failed export, the
summary, and the one way every file of theirs is written (atomic.py)."""

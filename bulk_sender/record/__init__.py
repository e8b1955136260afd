"""What a run records: the journal, the run lock, the results file and the failed export."""

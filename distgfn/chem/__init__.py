"""Chemistry for the fragment-based molecule task: the sEH proxy."""

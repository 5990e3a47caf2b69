"""How long inputs and results are kept, and the sweeper that frees their bytes after."""

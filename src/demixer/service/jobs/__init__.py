"""A job's state, its queue and what decides it: the one owner of a job's status."""

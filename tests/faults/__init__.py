"""Fault tests: real child processes killed with SIGKILL mid-work, two writers on one MEDLEY_HOME."""

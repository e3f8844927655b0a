"""Whole-pipeline behaviour: runs of the assets against the sandbox and the emulators, faults, pools, resumes."""

"""Cases of tests/probe_inputs.py: each module defines CASES, a list of common.Case (see common.py)."""

"""One checks module per episode (``ep05.py``…): its probes, cases and misconceptions."""

"""Print what a finished run produced: `python workflow_scripts/print_run_summary.py results`."""

import sys

from copydetect.summary import format_run_summary

if __name__ == "__main__":
    print(format_run_summary(sys.argv[1] if len(sys.argv) > 1 else "results"))

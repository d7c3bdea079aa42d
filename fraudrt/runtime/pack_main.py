"""Entry point of a pack process (`python -m fraudrt.runtime.pack_main <pack_id> <platform_run_id>`)."""

import sys

from ._pack_process import main

if __name__ == "__main__":
    sys.exit(main())

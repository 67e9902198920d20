"""Run several start checks in one Python: ``checks.py JSON``, JSON a list of ``[source, [args...]]``.

Each check is a shipped script (``port_check.py``, ``read_check.py``) run as ``python -I -c SOURCE ARGS...`` would
run it: in a namespace of its own, with its own ``sys.argv``. The first that fails ends the run, after its own
message, with exit status 64 + its index, so warptasks says which check failed, with that check's hint; a start
saves a Python start-up per check. Standard library only, old syntax: it runs with the environment's Python.
"""

import json
import sys
import traceback

FIRST = 64


def main(argv):
    checks = json.loads(argv[1])
    for index, (source, args) in enumerate(checks):
        sys.argv = ["-c"] + list(args)
        try:
            exec(compile(source, "<check %d>" % index, "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        except SystemExit as stop:
            if stop.code is None or stop.code == 0:
                continue
            if not isinstance(stop.code, int):
                sys.stdout.write("%s\n" % stop.code)
        except Exception:
            traceback.print_exc()
        else:
            continue
        sys.stdout.flush()
        sys.exit(FIRST + index)


if __name__ == "__main__":
    main(sys.argv)

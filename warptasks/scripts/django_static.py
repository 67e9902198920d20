"""Runs Django's collectstatic for ``warp build`` and records where files went.

Usage: python -c SOURCE OUT_JSON SUPPLIED_STATIC_ROOT COLLECT(1|0)

When the project's settings have no STATIC_ROOT, SUPPLIED_STATIC_ROOT is used
without the user editing settings (emptied first: a folder of warptasks' own,
not the one being served). Writes {"static_url", "static_root"} to
OUT_JSON for the server to alias.
"""

import json
import os
import sys


def main(out, supplied, collect):
    import django
    from django.conf import settings

    ours = bool(supplied and not getattr(settings, "STATIC_ROOT", None))
    if ours:
        settings.STATIC_ROOT = supplied
    django.setup()
    if collect == "1":
        from django.core.management import call_command

        # The folder supplied is warptasks' own, not the one served (that one is switched to after the build): emptied
        # first, it holds this build's files only, none of an older build's.
        call_command("collectstatic", interactive=False, verbosity=1, clear=ours)
    facts = {"static_url": settings.STATIC_URL, "static_root": str(settings.STATIC_ROOT or "")}
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(facts, handle)
    os.replace(tmp, out)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main(*sys.argv[1:4])

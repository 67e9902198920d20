"""Exit non-zero, saying why, unless the port is free: ``python port_check.py HOST PORT``.

Run by ``warp start`` with the environment's Python before the server starts,
so a port in use is a clear error and not a server that half-starts.
"""

import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((host, port))
except OSError as e:
    print("port %s on %s is not free: %s" % (port, host, e.strerror))
    sys.exit(1)

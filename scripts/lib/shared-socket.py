#!/usr/bin/env python3
"""Starts N zero-logs workers on one listening socket, as zero-logs.socket does.

systemd binds the socket once and passes it to every zero-logs@N instance (fd 3,
LISTEN_FDS=1, LISTEN_PID = the instance's own pid); the kernel then spreads the
connections over the instances that accept. This does the same without systemd, for
`scripts/bench --workers N`: bind 127.0.0.1:PORT, fork N children, each in a session of
its own with the socket as fd 3, WORKER_ID=i and ADMIN_SOCKET=RUN_DIR/admin-i.sock (the
shared port cannot address one instance; the admin socket can), output to
RUN_DIR/worker-i.log; print the children's pids, one per line, and exit. The caller
stops them by pid.

Usage: shared-socket.py PORT N RUN_DIR BIN [ARGS...]
Exit status 2 when the port is taken (the caller may pick another).
"""

import os
import socket
import sys


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    port, workers, run_dir, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as err:
        print(f"shared-socket.py: cannot bind 127.0.0.1:{port}: {err}", file=sys.stderr)
        sys.exit(2)
    sock.listen(4096)
    for i in range(1, workers + 1):
        pid = os.fork()
        if pid == 0:
            start_worker(sock, i, run_dir, argv)
        print(pid, flush=True)
    sock.close()


def start_worker(sock, index, run_dir, argv):
    """In the child: becomes worker `index`; never returns."""
    try:
        os.setsid()
        if sock.fileno() != 3:
            os.dup2(sock.fileno(), 3)
        os.set_inheritable(3, True)
        log = os.open(os.path.join(run_dir, f"worker-{index}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(4, 1024)
        env = dict(os.environ)
        env.update(
            LISTEN_FDS="1",
            LISTEN_PID=str(os.getpid()),
            WORKER_ID=str(index),
            ADMIN_SOCKET=os.path.join(run_dir, f"admin-{index}.sock"),
        )
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)


if __name__ == "__main__":
    main()

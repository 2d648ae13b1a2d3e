"""`python -m deployer`: one deploy in a child process, request on stdin, results on stdout (JSON).

For callers that must not host ansible themselves (the coordinator's event loop: ansible forks,
keeps process-wide state and sets signal handlers, which only a main thread may do). Secrets arrive
on stdin, never in argv. Exit status 0 when every host is ok, 1 otherwise, 2 on a bad request, 130 on Ctrl-C (SIGINT).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from agentkit import logs
from agentkit.errors import HostStackError
from deployer.deploy import deploy
from deployer.engine import DEPLOY_INTERRUPTED
from deployer.model import Target


def main() -> None:
    logs.setup()
    try:
        req = json.load(sys.stdin)
        targets = [Target(**{**t, "ssh_host_keys": tuple(t.get("ssh_host_keys") or ())}) for t in req["targets"]]
        results = deploy(req["agent"], targets, req["coordinator_url"], admin_token=req.get("admin_token"),
                         api_url=req.get("api_url"), deploy_log=req.get("deploy_log", True),
                         holder=req.get("holder"), ca=Path(req["ca"]) if req.get("ca") else None)
    except (HostStackError, ValueError, KeyError, TypeError) as e:  # a bad request, or no wheelhouse to install
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(2)
    except KeyboardInterrupt:  # deploy() let go of its locks and ansible of its workers: one line, not a traceback
        print(f"deployer: {DEPLOY_INTERRUPTED}", file=sys.stderr)
        sys.exit(130)
    print(json.dumps({name: dataclasses.asdict(r) for name, r in results.items()}))
    sys.exit(0 if all(r.ok for r in results.values()) else 1)


if __name__ == "__main__":
    main()

"""The `toroid` command: run the service or a worker, and drive a running service from the shell."""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

def _worker_cmd(queues: str, concurrency: int, name: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.glue.app", "worker", "-Q", queues, "-c", str(concurrency),
            "-n", f"{name}@{socket.gethostname()}", "--loglevel=INFO", "--without-gossip", "--without-mingle"]


def start_demo(mode: str) -> None:
    """``--demo`` (load): record the demo networks shipped with the package (seconds, trains nothing);
    ``--demo train``: queue their training from scratch as ordinary train jobs."""
    from backend import demo

    if mode == "train":
        ids = demo.submit_training()
        if ids:
            print(f"demo: training {len(ids)} networks on digits from scratch (jobs {ids}); the Networks view "
                  "shows their progress", flush=True)
        return
    ids = demo.load_demo()
    print(f"demo: loaded {len(ids)} shipped networks (RSGD, SGD, ADV on digits; trained by "
          f"`python -m backend.demo.make`)" if ids else "demo: the demo networks are loaded already", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from backend.app import create_app
    from backend.config import get_settings
    from backend.db import upgrade_database
    from backend.protocol import HTTP_PROTOCOL

    settings = get_settings()
    busy = _port_busy(args.host, args.port)
    if busy:
        print(f"error: cannot listen on {args.host}:{args.port} ({busy}); stop what uses it or choose "
              "another port with --port", file=sys.stderr)
        return 1
    settings.ensure_dirs()
    upgrade_database()
    workers: list[subprocess.Popen] = []
    if not args.no_worker:
        # one worker process per queue: a path job starts within a second or two while a long train
        # runs on the batch worker (both write to one log)
        log = open(settings.home / "worker.log", "ab")
        for queue, concurrency in (("interactive", 1), ("batch", settings.worker_concurrency)):
            workers.append(subprocess.Popen(_worker_cmd(queue, concurrency, f"embedded-{queue}"),
                                            stdout=log, stderr=subprocess.STDOUT))
        print(f"workers started: interactive (pid {workers[0].pid}), batch (pid {workers[1].pid}); "
              f"log: {settings.home / 'worker.log'}", flush=True)
    def _terminate(signum, _frame):  # uvicorn restores this handler and re-raises SIGTERM when it is done
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.demo:
            start_demo(args.demo)
        print(f"Toroid at http://{args.host}:{args.port}  (data in {settings.home})", flush=True)
        require_auth = settings.auth == "on" or (settings.auth == "auto" and not _loopback(args.host))
        if require_auth:
            print("authentication is required (API tokens: `toroid user add NAME`)", flush=True)
        elif not _loopback(args.host):
            print(f"WARNING: listening on {args.host} without authentication (TOROID_AUTH=off)", flush=True)
        if args.api_workers > 1:  # several API processes; each builds the app from the environment
            os.environ["TOROID_AUTH"] = "on" if require_auth else "off"
            uvicorn.run("backend.app:create_app", factory=True, workers=args.api_workers, host=args.host,
                        port=args.port, log_level="warning", http=HTTP_PROTOCOL)
        else:
            uvicorn.run(create_app(migrate=False, require_auth=require_auth), host=args.host, port=args.port,
                        log_level="warning", http=HTTP_PROTOCOL)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def _port_busy(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None when it can): checked before anything starts or prints."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_user(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from backend import auth
    from backend.db import new_session, upgrade_database
    from backend.models import User

    upgrade_database()
    with new_session() as s:
        try:
            if args.action == "add":
                user, token = auth.create_user(s, args.name, admin=args.admin)
                print(f"user {user.name} added{' (admin)' if user.is_admin else ''}. API token (shown once, keep it):")
                print(token)
            elif args.action == "token":
                print(auth.new_token(s, args.name))
            else:
                for u in s.scalars(select(User).order_by(User.id)):
                    print(f"{u.name}{'  (admin)' if u.is_admin else ''}")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from backend import jobs
    from backend.db import new_session, upgrade_database

    upgrade_database()
    with new_session() as s:
        _print(jobs.reconcile(s, resend_all=True))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from backend.config import get_settings
    from backend.db import upgrade_database

    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    get_settings().ensure_dirs()
    upgrade_database()
    name = args.name or (f"gpu{args.gpu}" if args.gpu is not None else "worker")
    cmd = _worker_cmd(args.queues, args.concurrency, name)
    os.execv(cmd[0], cmd)  # become the Celery worker: signals (stop, kill) reach it directly
    return 0


# ---- client commands ---------------------------------------------------------------------------

def _client(args):
    from backend.client import Client

    return Client(args.url, token=getattr(args, "token", None))


def _wait(client, job: dict, quiet: bool = False) -> dict:
    from tqdm import tqdm

    if job["status"] == "succeeded":
        return job
    with tqdm(total=100, desc=f"job {job['id']} ({job['kind']})", unit="%", disable=quiet,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:
        def show(j):
            bar.n = round(100 * j["progress"], 1)
            bar.set_postfix_str(_where(j) + j["message"][:60])
            bar.refresh()
        return client.wait(job, on_progress=show)


class UsageError(Exception):
    """A mistake on the command line: printed as one line, no traceback."""


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc.msg} at character {exc.pos}): {text!r}") from None


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def _where(job: dict) -> str:
    """Its place in the queue (and when it should start) while queued, its ETA while running (what the
    progress bar shows first)."""
    if job["status"] == "queued" and job.get("queue_position"):
        start = job.get("starts_in_seconds")
        return f"#{job['queue_position']} in the queue" + (f", starts in ~{_clock(start)}" if start is not None else "") + " · "
    eta = job.get("eta_seconds")
    if job["status"] == "running" and eta is not None:
        return f"ETA {_clock(eta)} · "
    return ""


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[dict], columns: list[tuple[str, str, int, str]]) -> None:
    """Rows as an aligned text table: columns are (key, heading, width, "<" or ">")."""
    print("  ".join(f"{h:{a}{w}}" for _, h, w, a in columns).rstrip())
    for row in rows:
        print("  ".join(f"{_cell(row.get(k), w):{a}{w}}" for k, _, w, a in columns).rstrip())


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.2f}%"


def cmd_networks(args) -> int:
    nets = _client(args).networks()
    if args.json:
        _print(nets)
        return 0
    if not nets:
        print("no networks yet (toroid train ..., toroid upload ..., or toroid serve --demo)")
        return 0
    rows = [{"id": n["id"], "name": n["name"], "architecture": n.get("architecture_label") or n["architecture"].get("kind", "?"), "dataset": n["dataset"],
             "sampler": n["source"].get("optimizer") or n["source"].get("kind"),
             "train": _pct(n["train_error"]), "test": _pct(n["test_error"]), "tags": ",".join(n.get("tags") or []),
             "created": str(n["created_at"])[:16].replace("T", " ")} for n in nets]
    _table(rows, [("id", "id", 5, ">"), ("name", "name", 24, "<"), ("architecture", "architecture", 26, "<"),
                  ("dataset", "data set", 10, "<"), ("sampler", "sampler", 9, "<"), ("train", "train err", 9, ">"),
                  ("test", "test err", 9, ">"), ("tags", "tags", 18, "<"), ("created", "created", 16, "<")])
    print(f"{len(nets)} network(s); --json for everything")
    return 0


def estimate_line(e: dict) -> str:
    """One line a person reads: "≈ 1.2 GFLOP, 34.5 MiB, ~3 s on the interactive queue"."""
    secs = e.get("estimated_seconds")
    when = f"~{secs:.3g} s" if secs is not None else "time unknown (no finished job measured yet)"
    return (f"≈ {e['cost_flops'] / 1e9:.3g} GFLOP, {e['memory_bytes'] / 2**20:.1f} MiB, {when} "
            f"on the {e['queue']} queue")


def _run_job(args, kind: str, params: dict) -> int:
    client = _client(args)
    if getattr(args, "dry_run", False):
        e = client.estimate(kind, **params)
        print(estimate_line(e))
        _print(e)
        return 0
    job = client.submit(kind, **params)
    if args.no_wait:
        _print(job)
        return 0
    job = _wait(client, job, quiet=args.quiet)
    warning = (job.get("result") or {}).get("warning") if kind == "train" else None
    if warning:  # a training that missed its target (or whose sampler failed) says so, whatever is printed
        print(f"warning: {warning}", file=sys.stderr)
    if args.result_only:
        result = dict(job["result"] or {})
        if kind == "train" and "history" in result:  # the curve is on the network (toroid networks --json)
            result["epochs"] = len(result.pop("history"))
        _print(result)
    else:
        _print(job)
    return 0


def cmd_train(args) -> int:
    params = {"architecture": _json(args.arch, "--arch"), "dataset": args.dataset, "optimizer": args.optimizer,
              "epochs": args.epochs, "seed": args.seed}
    if args.name:
        params["name"] = args.name
    for item in args.param or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--param {item!r}: write KEY=JSON, e.g. lr=0.05")
        params[key] = _json(value, f"--param {key}")
    return _run_job(args, "train", params)


def cmd_path(args) -> int:
    params = {"a": args.a, "b": args.b, "type": args.type, "points": args.points}
    extra = list(getattr(args, "extra", []))
    while extra:  # the path kind's other parameters (the registry's table: the service checks them)
        name = extra.pop(0)
        if not name.startswith("--") or not extra:
            raise UsageError(f"expected --NAME VALUE after the path's options, got {name!r}")
        params[name[2:].replace("-", "_")] = _json_or_text(extra.pop(0))
    return _run_job(args, "path", params)


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def kind_parser(name: str) -> argparse.ArgumentParser:
    """`toroid job NAME`: the job kind's inputs and parameters as options, read from the registry."""
    from workers.landscape import kinds, params

    kind = kinds.KINDS[name]
    lines = []
    for key, p in kind.params.items():
        when = "".join(f" (when {o} is {' or '.join(map(str, v))})" for o, v in (p.get("when") or {}).items())
        default = "" if p["default"] is None else f"; default {json.dumps(p['default'])}"
        lines.append(f"  {key}: {p['type']}, {params.describe(p) if p['type'] in params.TYPES else p['type']}"
                     f"{default}{when}\n      {p['help']}")
    k = argparse.ArgumentParser(prog=f"toroid job {name}", description=f"{kind.description} (queue: {kind.queue})",
                                epilog="parameters (also accepted as --NAME VALUE, VALUE as JSON):\n" + "\n".join(lines),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("params", nargs="?", default="{}", help="the params as one JSON object (options below add to it)")
    _client_options(k, job=True)
    for key, rule in kind.inputs.items():
        k.add_argument(f"--{key}", type=int, nargs=None if rule.get("count") == 1 else "+", default=argparse.SUPPRESS,
                       help="network id" + ("" if rule.get("count") == 1 else "s"))
    for key in kind.params:
        k.add_argument(f"--{key}", type=_json_or_text, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return k


def cmd_job(args) -> int:
    from workers.landscape import kinds

    if args.kind not in kinds.KINDS:
        known = ", ".join(kinds.KINDS)
        if args.kind is None or args.help:
            print(f"usage: toroid job KIND [PARAMS] [--NAME VALUE ...]\njob kinds: {known}\n"
                  "`toroid job KIND --help` lists a kind's parameters")
            return 0 if args.help else 2
        print(f"error: unknown job kind {args.kind!r}; known: {known}", file=sys.stderr)
        return 2
    parser = kind_parser(args.kind)
    if args.help or {"-h", "--help"} & set(args.rest):
        parser.print_help()
        return 0
    opts, extra = parser.parse_known_args(args.rest)
    params = _json(opts.params, "the job's params") if opts.params else {}
    if not isinstance(params, dict):
        raise UsageError(f"the job's params must be a JSON object like '{{\"network\": 3}}', got {opts.params!r}")
    skip = {"params", "url", "token", "no_wait", "quiet", "result_only", "dry_run"}
    params.update({k: v for k, v in vars(opts).items() if k not in skip})
    while extra:  # --NAME VALUE pairs the registry does not list (a sampler's parameters); the service checks them
        name = extra.pop(0)
        if not name.startswith("--") or not extra:
            parser.error(f"expected --NAME VALUE, got {name!r}")
        params[name[2:].replace("-", "_")] = _json_or_text(extra.pop(0))
    return _run_job(opts, args.kind, params)


def cmd_upload(args) -> int:
    if not os.path.isfile(args.file):
        raise UsageError(f"no such file: {args.file}")
    rename = _json(args.rename, "--rename") if args.rename else None
    if rename is not None and not (isinstance(rename, dict) and all(isinstance(v, str) for v in rename.values())):
        raise UsageError('--rename must be a JSON object of substrings, e.g. {"shortcut.": "downsample."}')
    options = _json(args.dataset_options, "--dataset-options") if args.dataset_options else None
    if options is not None and not isinstance(options, dict):
        raise UsageError('--dataset-options must be a JSON object, e.g. {"normalize": "none"}')
    net = _client(args).upload(args.file, name=args.name or os.path.basename(args.file),
                               architecture=_json(args.arch, "--arch"), dataset=args.dataset,
                               tags=args.tag or [], rename=rename, dataset_options=options,
                               accept_proposed=args.accept_proposed_names)
    if args.accept_proposed_names and (net.get("source") or {}).get("renamed"):
        renamed = net["source"]["renamed"]
        print(f"renamed {len(renamed)} tensors as the service proposed", file=sys.stderr)
    _print(net)
    return 0


def cmd_reproduce(args) -> int:
    from backend.client.reproduce import run

    architecture = None
    if args.architecture is not None:
        try:
            architecture = json.loads(args.architecture)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"error: --architecture is not JSON ({exc.msg} at character {exc.pos})") from None
        except RecursionError:
            raise SystemExit("error: --architecture is JSON nested too deeply") from None
    try:
        summary = run(_client(args), scale=args.scale, out=args.out, seeds=args.seeds, architecture=architecture,
                      dataset=args.dataset)
    except (ValueError, RecursionError) as exc:
        raise SystemExit(f"error: {exc if isinstance(exc, ValueError) else 'the architecture is nested too deeply'}") from None
    print(f"report: {summary['report']}\nsummary: {summary['summary']}")
    return 0


def cmd_jobs(args) -> int:
    filters = {k: v for k, v in (("status", args.status), ("kind", args.kind), ("limit", args.limit)) if v}
    jobs = _client(args).jobs(**filters)
    if args.json:
        _print(jobs)
        return 0
    if not jobs:
        print("no jobs" + (" match" if args.status or args.kind else " yet"))
        return 0
    rows = []
    for j in jobs:
        state = j["status"] + (" (cached)" if j["cached"] else "")
        where = _where(j).rstrip(" ·")
        shown = {k: v for k, v in j["params"].items() if k not in ("architecture", "tags", "visibility", "dataset_options")}
        rows.append({"id": j["id"], "kind": j["kind"], "status": state,
                     "progress": f"{100 * (1.0 if j['status'] == 'succeeded' else j['progress']):.0f}%",
                     "when": where, "params": json.dumps(shown, separators=(",", ":")),
                     "created": str(j["created_at"])[:16].replace("T", " "),
                     "message": (j["error"] or j["message"]) if j["status"] != "succeeded" else ""})
    _table(rows, [("id", "id", 5, ">"), ("kind", "kind", 12, "<"), ("status", "status", 18, "<"),
                  ("progress", "done", 5, ">"), ("when", "queue / ETA", 16, "<"), ("params", "params", 36, "<"),
                  ("created", "created", 16, "<"), ("message", "message", 40, "<")])
    print(f"{len(jobs)} job(s); --json for everything")
    return 0


def cmd_cancel(args) -> int:
    _print(_client(args).cancel(args.job))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toroid", description="Toroid: explore the error landscapes of trained networks.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the API and two Celery workers beside it (queues interactive and batch)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--demo", nargs="?", const="load", choices=["load", "train"], default=None,
                   help="--demo: load the demo networks shipped with the package (RSGD, SGD and ADV minimizers "
                        "on digits, in seconds); --demo train: train them from scratch as jobs")
    s.add_argument("--no-worker", action="store_true", help="start only the API (workers run elsewhere)")
    s.add_argument("--api-workers", type=int, default=1, help="API processes (uvicorn workers)")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="start only a Celery worker")
    w.add_argument("--queues", default="interactive,batch",
                   help="comma-separated queues this worker takes: interactive (evaluate, distance, canonicalize, "
                        "path, small flatness) and/or batch (train, matrix, plane, big flatness)")
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--gpu", type=int, default=None, help="GPU index this worker uses (sets CUDA_VISIBLE_DEVICES)")
    w.add_argument("--name", default=None)
    w.set_defaults(func=cmd_worker)

    u = sub.add_parser("user", help="manage users and API tokens (on the server machine)")
    u.add_argument("action", choices=["add", "token", "list"], help="add a user, make a new token, list users")
    u.add_argument("name", nargs="?", default="")
    u.add_argument("--admin", action="store_true", help="the user may read and delete everything")
    u.set_defaults(func=cmd_user)

    r = sub.add_parser("reconcile", help="send queued jobs to the broker again, re-queue jobs of dead workers")
    r.set_defaults(func=cmd_reconcile)

    def client_parser(name: str, help: str, func, job: bool = False):
        c = sub.add_parser(name, help=help)
        _client_options(c, job)
        c.set_defaults(func=func)
        return c

    c = client_parser("reproduce", "rerun the paper's main experiments through the service; write a report",
                      cmd_reproduce)
    c.add_argument("--scale", choices=["tiny", "small", "full"], default="small",
                   help="tiny: seconds (tests); small: about 3 minutes on 2 CPU cores with digits and HMM, about "
                        "17 with MNIST and Fashion-MNIST in TOROID_DATA_ROOT; full: a GPU server")
    c.add_argument("--out", default="reproduce-report", help="folder for report.html and summary.json")
    c.add_argument("--seeds", type=int, default=None, help="minimizers per sampler (default by scale)")
    c.add_argument("--architecture", default=None, metavar="JSON",
                   help='your own network instead of the paper\'s, e.g. \'{"kind": "resnet", "depth": 20}\' (real-valued)')
    c.add_argument("--dataset", default=None, help="run on this data set (e.g. cifar10) instead of the scale's")
    c = client_parser("networks", "list stored networks", cmd_networks)
    c.add_argument("--json", action="store_true", help="every field of every network, as JSON")
    c = client_parser("train", "train a network (a train job) and wait for it", cmd_train, job=True)
    c.add_argument("--arch", default='{"kind": "mlp", "hidden": [32, 32]}', help="architecture spec as JSON")
    c.add_argument("--dataset", default="digits")
    c.add_argument("--optimizer", default="sgd")
    c.add_argument("--epochs", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--name", default=None)
    c.add_argument("--param", action="append", help="more optimizer parameters as KEY=JSON, e.g. lr=0.05")
    c = client_parser("path", "error along a path between networks A and B", cmd_path, job=True)
    c.epilog = ("any other parameter of the path kind as --NAME VALUE (VALUE as JSON), e.g. --bn interpolate, "
                "--variant garipov --epochs 20; `toroid job path --help` lists them all with their bounds")
    c.add_argument("a", type=int)
    c.add_argument("b", type=int)
    c.add_argument("--type", default="linear", help="linear, linear_aligned, geodesic, hamming or bend")
    c.add_argument("--points", type=int, default=11)
    c = sub.add_parser("job", help="submit any job kind and wait (`toroid job KIND --help`: its parameters)",
                       add_help=False)
    c.add_argument("-h", "--help", action="store_true")
    c.add_argument("kind", nargs="?")
    c.add_argument("rest", nargs=argparse.REMAINDER)
    c.set_defaults(func=cmd_job)
    c = client_parser("upload", "upload a weights file (.safetensors or .pt state_dict)", cmd_upload)
    c.add_argument("file")
    c.add_argument("--arch", required=True, help="architecture spec as JSON")
    c.add_argument("--dataset", default="digits")
    c.add_argument("--name", default=None)
    c.add_argument("--tag", action="append")
    c.add_argument("--dataset-options", default=None, help='the data set\'s options as JSON, e.g. {"normalize": "none"}')
    c.add_argument("--rename", default=None, help='substrings to replace in the file\'s tensor names, as JSON: '
                   '{"shortcut.": "downsample.", "linear.": "fc."}')
    c.add_argument("--accept-proposed-names", action="store_true",
                   help="if the names do not fit but the shapes do, one to one in order, upload with the names the "
                        "service proposes")
    c = client_parser("jobs", "list recent jobs (newest first)", cmd_jobs)
    c.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"], default=None)
    c.add_argument("--kind", default=None)
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--json", action="store_true", help="every field of every job, as JSON")
    c = client_parser("cancel", "cancel a job", cmd_cancel)
    c.add_argument("job", type=int)
    return p


def _client_options(c: argparse.ArgumentParser, job: bool = False) -> None:
    c.add_argument("--url", default=None, help="service URL (default $TOROID_URL or http://127.0.0.1:8000)")
    c.add_argument("--token", default=None, help="API token (default $TOROID_TOKEN)")
    if job:
        c.add_argument("--no-wait", action="store_true", help="print the queued job and return")
        c.add_argument("--dry-run", action="store_true",
                       help="print what the job would cost (FLOPs, memory, seconds) and submit nothing")
        c.add_argument("--quiet", action="store_true", help="no progress bar")
        c.add_argument("--result-only", action="store_true",
                       help="print only the result (a train's without its curve: the network has it)")


def _service_url(args: argparse.Namespace) -> str:
    """The URL a client command talks to: --url, else $TOROID_URL, else the default (as the client picks it)."""
    return (getattr(args, "url", None) or os.environ.get("TOROID_URL") or "http://127.0.0.1:8000").rstrip("/")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func is not cmd_path:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # a closed pipe (`toroid jobs | head`) shows here, inside the try
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as other shell tools do; point stdout at devnull
        # so that the interpreter's own flush at exit does not complain a second time
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # client errors: one readable line, not a traceback
        from backend.client import ApiError

        if isinstance(exc, UsageError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (ApiError,)):
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
        import httpx

        if isinstance(exc, httpx.ConnectError):
            print(f"error: cannot reach the service at {_service_url(args)}; is `toroid serve` running there? "
                  "(--url or TOROID_URL choose another)", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

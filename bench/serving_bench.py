"""The serving benchmark's driver; run it through bench/serving.sh, which builds and installs
what it needs and passes the paths below.

Four servers, one at a time, each pinned to CPU SERVER_CPU, the load generator (wrk, one
thread) pinned to CPU LOAD_CPU, everything on 127.0.0.1:

  modelship   target/release/modelship-serving, one runtime thread, versions v1 (logreg.onnx)
              and v2 (rf.onnx) of one model, with drift reference data
  fastapi     the source design's app (bench/fastapi/app.py), uvicorn, one worker, the same
              models trained by bench/fastapi/train.py and loaded with joblib
  mlserver    MLServer + mlserver-sklearn with its default settings, the same joblib files as
              models "logreg" and "rf", Open Inference Protocol requests
  bare-axum   serving/examples/bare_axum.rs: parses the same body, answers a constant
  modelship-predlog
              Modelship as above with the prediction log on (JSON lines on stdout, sample
              rate 1.0, a record per prediction); its stdout is a pipe the driver drains, as a
              container runtime drains a pod's. Not in the default set: SERVERS=modelship,
              modelship-predlog measures the log's cost side by side.
  modelship-queued
              Modelship as above with every call through the batching queue
              (MODELSHIP_INLINE_CALL_MAX_MICROS=0), the toll of the batching hop side by
              side. Not in the default set.
  modelship-baseline
              Modelship as above from another build, the binary BASELINE_BINARY names (an
              earlier revision, say). Not in the default set: SERVERS=modelship,
              modelship-baseline BASELINE_BINARY=... compares two revisions in one run.

Per server: cold start (spawn to the first 200 on its readiness route, COLD_STARTS times,
median), then one process: a real prediction is checked with curl, then per model a warm-up
and one wrk run per concurrency, then RSS (VmRSS summed over the server's processes).

Every measurement run holds BENCH_LOCK (flock) and records the load average when it starts.
Standard library only.
"""

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# The source design's request: 20 features (the README's example row).
FEATURES = [0.35, 0.56, -0.12, -0.29, 3.05, 1.24, -0.45, 0.18, 1.11, -0.52,
            0.06, -1.49, 0.27, 0.02, -0.79, 0.93, -0.23, 0.41, -0.07, 1.3]

MODELS = [("logreg", "v1"), ("rf", "v2")]  # (fixture, version in the source design's terms)
SERVER_ORDER = ["modelship", "bare-axum", "fastapi", "mlserver"]


def log(msg):
    print(f"[serving-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def source_body(version):
    return json.dumps({"features": FEATURES, "model_version": version}, separators=(",", ":"))


def oip_body():
    # Both outputs, so MLServer does the same work as the source design's app: predict and
    # predict_proba.
    return json.dumps({
        "inputs": [{"name": "input-0", "shape": [1, len(FEATURES)], "datatype": "FP64",
                    "data": FEATURES}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }, separators=(",", ":"))


# ----------------------------------------------------------------------------------------------
# Servers


class Server:
    """How to start one server, probe its readiness, and load it."""

    def __init__(self, name, label, argv, env, cwd, ready, targets, ports):
        self.name = name
        self.label = label
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.ready = ready  # (method, path, body or None)
        self.targets = targets  # model -> (path, body, checker)
        self.ports = ports
        # Standard output to a pipe drained by the driver (a log stream), not the log file.
        self.drain_stdout = False


def check_source(version):
    def check(doc):
        ok = (set(doc) >= {"prediction", "confidence", "model_version", "timestamp"}
              and doc["prediction"] in (0.0, 1.0) and 0.5 <= doc["confidence"] <= 1.0
              and str(doc["model_version"]) == version)
        return ok, (doc.get("prediction"), doc.get("confidence"))
    return check


def check_oip(doc):
    outputs = {o["name"]: o["data"] for o in doc.get("outputs", [])}
    try:
        label = float(outputs["predict"][0])
        proba = [float(v) for v in outputs["predict_proba"]]
        return label in (0.0, 1.0) and abs(sum(proba) - 1) < 1e-6, (label, max(proba))
    except (KeyError, IndexError, TypeError, ValueError):
        return False, None


def check_constant(doc):
    return "prediction" in doc, None


def python_env(extra):
    env = dict(os.environ)
    # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set on this machine for old OpenBLAS builds;
    # they slow a current numpy, so the Python servers run without them.
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    env.update(extra)
    return env


def make_servers(args, work):
    servers = {}

    # Modelship: one model, versions v1 and v2, as MODELSHIP_MODEL_DIR lays them out.
    mdir = work / "modelship-models"
    fixtures = Path(args.repo) / "serving" / "fixtures"
    for fixture, version in MODELS:
        d = mdir / "classifier" / version
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixtures / f"{fixture}.onnx", d / "model.onnx")
        shutil.copyfile(fixtures / "reference.json", d / "reference.json")
    binary = str(Path(args.repo) / "target" / "release" / "modelship-serving")

    def modelship(name, description, path, extra_env):
        port = free_port()
        return Server(
            name, description, [path],
            dict(os.environ, MODELSHIP_LISTEN=f"127.0.0.1:{port}", MODELSHIP_MODEL_DIR=str(mdir),
                 MODELSHIP_WORKER_THREADS="1", MODELSHIP_DRAIN_SECONDS="0", **extra_env),
            str(work), ("GET", "/ready", None),
            {f: (f"/predict", source_body(v), check_source(v)) for f, v in MODELS},
            {"http": port},
        )

    servers["modelship"] = modelship("modelship", "Modelship serving", binary, {})
    servers["modelship-predlog"] = modelship(
        "modelship-predlog", "Modelship serving, prediction log on (stdout, sample rate 1.0)",
        binary, {"MODELSHIP_PREDICTION_LOG": "stdout",
                 "MODELSHIP_PREDICTION_LOG_SAMPLE_RATE": "1.0"})
    servers["modelship-predlog"].drain_stdout = True
    servers["modelship-queued"] = modelship(
        "modelship-queued", "Modelship serving, every call through the batching queue",
        binary, {"MODELSHIP_INLINE_CALL_MAX_MICROS": "0"})
    baseline = os.environ.get("BASELINE_BINARY")
    if baseline:
        servers["modelship-baseline"] = modelship(
            "modelship-baseline", f"Modelship serving, the build at {baseline}", baseline, {})

    port = free_port()
    body = source_body("v1")
    servers["bare-axum"] = Server(
        "bare-axum", "bare axum (constant answer)",
        [str(Path(args.repo) / "target" / "release" / "examples" / "bare_axum"),
         f"127.0.0.1:{port}"],
        dict(os.environ), str(work), ("POST", "/predict", body),
        {"logreg": ("/predict", body, check_constant)},
        {"http": port},
    )

    # The source design's app: model/model_v1.pkl and model/model_v2.pkl under its cwd.
    port = free_port()
    servers["fastapi"] = Server(
        "fastapi", "FastAPI app (source design)",
        [str(Path(args.fastapi_venv) / "bin" / "python"),
         str(Path(args.repo) / "bench" / "fastapi" / "app.py")],
        python_env({"HOST": "127.0.0.1", "PORT": str(port)}), str(Path(args.joblib_dir)),
        ("GET", "/health", None),
        {f: ("/predict", source_body(v), check_source(v)) for f, v in MODELS},
        {"http": port},
    )

    # MLServer: a model repository with the same joblib files, default settings but ports and
    # host.
    repo = work / "mlserver-models"
    http, grpc, metrics = free_port(), free_port(), free_port()
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
    }, indent=2))
    for fixture, version in MODELS:
        d = repo / fixture
        d.mkdir(exist_ok=True)
        shutil.copyfile(Path(args.joblib_dir) / "model" / f"model_{version}.pkl",
                        d / "model.joblib")
        (d / "model-settings.json").write_text(json.dumps({
            "name": fixture, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": version},
        }, indent=2))
    servers["mlserver"] = Server(
        "mlserver", "MLServer + mlserver-sklearn",
        [str(Path(args.mlserver_venv) / "bin" / "mlserver"), "start", str(repo)],
        python_env({}), str(repo), ("GET", "/v2/health/ready", None),
        {f: (f"/v2/models/{f}/infer", oip_body(), check_oip) for f, _ in MODELS},
        {"http": http, "grpc": grpc, "metrics": metrics},
    )
    return servers


# ----------------------------------------------------------------------------------------------
# Processes


class Running:
    def __init__(self, server, log_path):
        self.server = server
        self.log_file = open(log_path, "ab")
        # Pin the child the way `taskset -c SERVER_CPU` would, without an extra exec in the
        # cold-start time: the child inherits this process's affinity at fork.
        os.sched_setaffinity(0, {ARGS.server_cpu})
        try:
            self.spawned = time.perf_counter()
            stdout = subprocess.PIPE if server.drain_stdout else self.log_file
            self.proc = subprocess.Popen(
                server.argv, env=server.env, cwd=server.cwd, stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=self.log_file if server.drain_stdout else subprocess.STDOUT,
                start_new_session=True)
        finally:
            os.sched_setaffinity(0, {ARGS.load_cpu})
        self.pgid = self.proc.pid
        self.drained = 0
        if server.drain_stdout:
            # Read and discard, counting bytes, on the load generator's CPU.
            def drain(pipe):
                for chunk in iter(lambda: pipe.read(1 << 16), b""):
                    self.drained += len(chunk)
            self.drainer = threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True)
            self.drainer.start()

    def pids(self):
        """Every process of the server: its process group (MLServer's workers included)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == self.pgid:  # pgrp
                found.append(int(entry))
        return found

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def cpu_ticks(self):
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total

    def stop(self):
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                self.proc.wait()
        # Workers left behind in the group (MLServer's pool) go too.
        for _ in range(50):
            if not self.pids():
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            time.sleep(0.1)
        self.log_file.close()


def http_status(port, method, path, body, timeout=2.0):
    """Status code of one request on a new connection, or None if it could not be sent."""
    payload = body.encode() if body else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(head.encode() + payload)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
            return int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_ready(run, timeout=120.0):
    """Seconds from spawn to the first 200 on the readiness route."""
    method, path, body = run.server.ready
    port = run.server.ports["http"]
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if run.proc.poll() is not None:
            raise RuntimeError(f"{run.server.name} exited with {run.proc.returncode} while "
                               f"starting (log: {run.log_file.name})")
        if http_status(port, method, path, body) == 200:
            return time.perf_counter() - run.spawned
        time.sleep(0.0005)
    raise RuntimeError(f"{run.server.name} not ready within {timeout} s")


def wait_port_free(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"port {port} still in use")


# ----------------------------------------------------------------------------------------------
# wrk


def lua_script(path, body, out):
    out.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
        f'wrk.path = "{path}"\n')


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(out):
    res = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None, "non2xx": 0,
           "socket_errors": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[key] = to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    res["errors"] = res["non2xx"] + res["socket_errors"]
    return res


def cpu_times(cpu):
    """(busy, interrupts, total) ticks of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            # user nice system idle iowait irq softirq steal
            total = sum(v[:8])
            return total - v[3] - v[4], v[5] + v[6], total
    return 0, 0, 1


def run_wrk(script, port, connections, duration, out_file=None):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s",
            "-s", str(script), f"http://127.0.0.1:{port}"]
    # wrk runs on LOAD_CPU: this process's affinity, inherited.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate()
    text = out.decode(errors="replace")
    if out_file:
        out_file.write_text(" ".join(argv) + "\n" + text)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {text}")
    return text


def measure(run, script, connections, args, raw_dir, tag):
    port = run.server.ports["http"]
    hz = os.sysconf("SC_CLK_TCK")
    ticks0 = run.cpu_ticks()
    busy0, irq0, total0 = cpu_times(args.server_cpu)
    wbusy0, _, wtotal0 = cpu_times(args.load_cpu)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    text = run_wrk(script, port, connections, args.duration, raw_dir / f"{tag}.txt")
    wall = time.perf_counter() - started
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, irq1, total1 = cpu_times(args.server_cpu)
    wbusy1, _, wtotal1 = cpu_times(args.load_cpu)
    ticks1 = run.cpu_ticks()
    res = parse_wrk(text)
    res["connections"] = connections
    # CPU use on the server's core: the server's own processes, interrupt handling (loopback
    # packets), and everything else that ran there (other work on this shared machine).
    span = max(total1 - total0, 1)
    res["server_cpu"] = round((ticks1 - ticks0) / hz / wall, 3)
    res["core_busy"] = round((busy1 - busy0) / span, 3)
    res["core_irq"] = round((irq1 - irq0) / span, 3)
    res["other_on_core"] = round(
        max(res["core_busy"] - res["server_cpu"] - res["core_irq"], 0.0), 3)
    # wrk's own CPU (the only child reaped meanwhile) and its core's total.
    res["wrk_cpu"] = round((children1.ru_utime + children1.ru_stime - children0.ru_utime
                            - children0.ru_stime) / wall, 3)
    res["load_core_busy"] = round((wbusy1 - wbusy0) / max(wtotal1 - wtotal0, 1), 3)
    res["rps_per_server_cpu"] = round(res["rps"] / res["server_cpu"]) if res["server_cpu"] else None
    return res


# ----------------------------------------------------------------------------------------------
# One run


def curl_check(run, model):
    path, body, check = run.server.targets[model]
    port = run.server.ports["http"]
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-H", "Content-Type: application/json",
         "-w", "\n%{http_code}", "-d", body, f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True)
    text, _, code = proc.stdout.rpartition("\n")
    if code != "200":
        raise RuntimeError(f"{run.server.name} {model}: HTTP {code}: {text} {proc.stderr}")
    doc = json.loads(text)
    ok, summary = check(doc)
    if not ok:
        raise RuntimeError(f"{run.server.name} {model}: not a prediction: {text}")
    return text, summary


def one_run(index, servers, args, out):
    raw = out / f"run{index}"
    raw.mkdir(parents=True, exist_ok=True)
    result = {"run": index, "servers": {}}
    lock = open(args.lock, "a")
    log(f"run {index}: waiting for the benchmark lock {args.lock}")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        result["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
        result["started"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        log(f"run {index}: lock taken, load average {' '.join(result['loadavg_start'])}")
        # Odd runs go in the order given, even runs in reverse: a drift of the machine over a
        # run (another tenant, the host's memory) then favours neither side of a comparison.
        order = args.servers if index % 2 else list(reversed(args.servers))
        for name in order:
            result["servers"][name] = bench_server(servers[name], args, raw)
        result["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    return result


def bench_server(server, args, raw):
    res = {"label": server.label, "cold_start_ms": [], "models": {}, "answers": {}}
    log_path = raw / f"{server.name}.log"
    # Cold starts.
    for i in range(args.cold_starts):
        run = Running(server, log_path)
        try:
            res["cold_start_ms"].append(round(wait_ready(run) * 1e3, 2))
        finally:
            run.stop()
        for port in server.ports.values():
            wait_port_free(port)
    res["cold_start_median_ms"] = statistics.median(res["cold_start_ms"])
    log(f"{server.name}: cold start {res['cold_start_ms']} ms")
    # Load.
    run = Running(server, log_path)
    try:
        wait_ready(run)
        for model in server.targets:
            text, summary = curl_check(run, model)
            res["answers"][model] = {"body": text, "summary": summary}
            path, body, _ = server.targets[model]
            script = raw / f"{server.name}-{model}.lua"
            lua_script(path, body, script)
            run_wrk(script, server.ports["http"], max(args.connections), args.warmup,
                    raw / f"{server.name}-{model}-warmup.txt")
            rows = []
            for c in args.connections:
                r = measure(run, script, c, args, raw, f"{server.name}-{model}-c{c}")
                log(f"{server.name} {model} c={c}: {r['rps']:.0f} req/s, p50 "
                    f"{fmt_ms(r['p50_ms'])} ms, p99 {fmt_ms(r['p99_ms'])} ms, errors "
                    f"{r['errors']}, server CPU {r['server_cpu']:.2f}, wrk CPU "
                    f"{r['wrk_cpu']:.2f}, others on the server's core {r['other_on_core']:.2f}")
                rows.append(r)
            res["models"][model] = {"rows": rows, "rss_kib_after": run.rss_kib()}
        res["rss_kib"] = run.rss_kib()
        res["processes"] = len(run.pids())
        if server.drain_stdout:
            res["stdout_bytes"] = run.drained
            log(f"{server.name}: {run.drained / 1e6:.1f} MB written to stdout")
        log(f"{server.name}: RSS {res['rss_kib'] / 1024:.1f} MiB over {res['processes']} "
            "process(es)")
    finally:
        run.stop()
    for port in server.ports.values():
        wait_port_free(port)
    return res


# ----------------------------------------------------------------------------------------------
# Report


def row_at(res, server, model, c):
    s = res["servers"].get(server)
    if not s or model not in s["models"]:
        return None
    for r in s["models"][model]["rows"]:
        if r["connections"] == c:
            return r
    return None


def fmt_ms(v):
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fmt_ratio(a, b):
    return f"{a / b:.1f}x" if a and b else "–"


def run_table(res, args):
    lines = ["| server | model | c | requests/s | p50 ms | p99 ms | errors | server CPU | "
             "requests per server CPU-second | wrk CPU | others on the server's core |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.servers:
        s = res["servers"].get(name)
        if not s:
            continue
        for model, m in s["models"].items():
            for r in m["rows"]:
                lines.append(
                    f"| {name} | {model if name != 'bare-axum' else '(none)'} | "
                    f"{r['connections']} | {r['rps']:,.0f} | {fmt_ms(r['p50_ms'])} | "
                    f"{fmt_ms(r['p99_ms'])} | {r['errors']} | {r['server_cpu'] * 100:.0f}% | "
                    f"{r['rps_per_server_cpu'] or 0:,} | {r['wrk_cpu'] * 100:.0f}% | "
                    f"{r['other_on_core'] * 100:.0f}% |")
    lines += ["", "| server | RSS after the load | processes | cold start to ready, median "
              f"(min–max of {args.cold_starts}) |", "|---|---:|---:|---:|"]
    for name in args.servers:
        s = res["servers"].get(name)
        if not s:
            continue
        cs = s["cold_start_ms"]
        lines.append(f"| {name} | {s['rss_kib'] / 1024:.1f} MiB | {s['processes']} | "
                     f"{fmt_ms(s['cold_start_median_ms'])} ms ({fmt_ms(min(cs))}–"
                     f"{fmt_ms(max(cs))}) |")
    return lines


def targets(res, args):
    """Design targets, and ratios against the peers, all from this run."""
    top = max(args.connections)
    ms, bare = row_at(res, "modelship", "logreg", top), row_at(res, "bare-axum", "logreg", top)
    out = {}
    s = res["servers"].get("modelship")
    if ms and bare:
        share = ms["rps"] / bare["rps"]
        text = (f"{share * 100:.0f}% of bare axum's requests/s at c={top} ({ms['rps']:,.0f} vs "
                f"{bare['rps']:,.0f}; target ≥ 80%)")
        if ms["rps_per_server_cpu"] and bare["rps_per_server_cpu"]:
            eff = ms["rps_per_server_cpu"] / bare["rps_per_server_cpu"]
            text += (f"; per server CPU-second {eff * 100:.0f}% ({ms['rps_per_server_cpu']:,} "
                     f"vs {bare['rps_per_server_cpu']:,})")
        out["rps_vs_bare"] = (share >= 0.8, text)
    if ms:
        out["p99"] = (ms["p99_ms"] < 2.0, f"p99 {fmt_ms(ms['p99_ms'])} ms at c={top} "
                      "(target < 2 ms)")
    if s:
        rss = s["rss_kib"] / 1024
        out["rss"] = (rss < 16, f"RSS {rss:.1f} MiB (target < 16 MiB)")
        cs = s["cold_start_median_ms"]
        out["cold_start"] = (cs < 20, f"cold start {fmt_ms(cs)} ms (target < 20 ms)")
    if s:
        errs = sum(r["errors"] for m in s["models"].values() for r in m["rows"])
        peers = [f"{name} {n}" for name, srv in res["servers"].items() if name != "modelship"
                 and (n := sum(r["errors"] for m in srv["models"].values() for r in m["rows"]))]
        out["errors"] = (errs == 0, f"Modelship: {errs} errors (must be 0)" + (
            f"; peers: {', '.join(peers)} (wrk timeouts past 5 s or non-2xx, see the tables)"
            if peers else "; peers: none"))
    return out


def ratio_lines(res, args):
    lines = ["| model | c | Modelship / FastAPI | Modelship / MLServer | Modelship / bare axum | "
             "the same per server CPU-second: / FastAPI, / MLServer, / bare axum |",
             "|---|---:|---:|---:|---:|---:|"]
    for model, _ in MODELS:
        for c in args.connections:
            ms = row_at(res, "modelship", model, c)
            if not ms:
                continue
            fa, ml = row_at(res, "fastapi", model, c), row_at(res, "mlserver", model, c)
            bare = row_at(res, "bare-axum", "logreg", c)
            share = f"{ms['rps'] / bare['rps'] * 100:.0f}%" if bare else "–"
            eff = ms["rps_per_server_cpu"]
            eff_share = (f"{eff / bare['rps_per_server_cpu'] * 100:.0f}%"
                         if bare and eff and bare["rps_per_server_cpu"] else "–")
            lines.append(f"| {model} | {c} | {fmt_ratio(ms['rps'], fa and fa['rps'])} | "
                         f"{fmt_ratio(ms['rps'], ml and ml['rps'])} | {share} | "
                         f"{fmt_ratio(eff, fa and fa['rps_per_server_cpu'])}, "
                         f"{fmt_ratio(eff, ml and ml['rps_per_server_cpu'])}, {eff_share} |")
    return lines


def memory_ratio(res):
    s = res["servers"]
    if "modelship" not in s:
        return []
    m = s["modelship"]
    parts = []
    for peer in ("fastapi", "mlserver"):
        if peer in s:
            parts.append(f"{peer}: RSS {s[peer]['rss_kib'] / m['rss_kib']:.0f}x, cold start "
                         f"{s[peer]['cold_start_median_ms'] / m['cold_start_median_ms']:.0f}x")
    return ["Modelship against " + "; ".join(parts) + " (peer / Modelship)."] if parts else []


def machine():
    mem = "?"
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "memory": mem, "cpu": cpu,
            "kernel": platform.release(), "python": platform.python_version()}


def pip_versions(python, names):
    proc = subprocess.run([python, "-m", "pip", "freeze", "--disable-pip-version-check"],
                          capture_output=True, text=True)
    want = {n.lower().replace("_", "-") for n in names}
    found = []
    for line in proc.stdout.splitlines():
        name = line.split("==")[0].lower().replace("_", "-")
        if name in want:
            found.append(line.strip())
    return ", ".join(sorted(found, key=str.lower))


def python_version(python):
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True).stdout.strip()


def wrk_version():
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    m = re.search(r"wrk \S*?([\d.]+)", proc.stdout + proc.stderr)
    return f"wrk {m.group(1)}" if m else "wrk"


def header(summary, args):
    """What is measured and how: the top of the section, rewritten by every recorded run."""
    m = summary["machine"]
    lines = [
        "## Serving",
        "",
        "`bash bench/serving.sh` (`make bench-serving`): Modelship serving against the source "
        "design's FastAPI app, MLServer and a bare axum server, side by side in one run.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, Linux "
        f"{m['kernel']}; shared with other work (compiles, tests), so every run records its "
        "load average and, per measurement, how much of the server's core other work took.",
        "",
        f"Each server pinned to CPU {args.server_cpu}, wrk ({summary['versions']['wrk']}, one "
        f"thread) pinned to CPU {args.load_cpu}, 127.0.0.1; per model a {args.warmup} s warm-up "
        f"at c={max(args.connections)}, then `wrk -t1 -cC -d{args.duration}s --latency` per "
        "concurrency. Same 20-feature row everywhere; a curl first checks that the answer is a "
        "real prediction. Errors = non-2xx responses + socket errors. Server CPU: the server's "
        "processes' CPU time / wall time (100% = the whole core); requests per server "
        "CPU-second = requests/s / server CPU, which other work on the core does not distort; "
        "wrk CPU: the load generator's; others on the server's core: the core's busy time less "
        "the server and interrupt handling (other work on this shared machine). RSS: VmRSS "
        "summed over the server's processes after all its load. Cold start: spawn to the first 200 on the readiness route (`/ready`, "
        "`/health`, `/v2/health/ready`, `POST /predict` for bare axum), median of "
        f"{args.cold_starts} starts. Servers run one after another, in the order given in "
        "odd runs and in reverse in even runs.",
        "",
        "- **modelship**: `modelship-serving` (release), `MODELSHIP_WORKER_THREADS=1`, one model "
        "with versions `v1` = `serving/fixtures/logreg.onnx` and `v2` = `rf.onnx` "
        "(`MODELSHIP_MODEL_DIR`, drift reference data on), `POST /predict` "
        "`{\"features\":[20 values],\"model_version\":\"v1\"}` (or `\"v2\"`).",
        "- **bare-axum**: `serving/examples/bare_axum.rs`, axum on a current-thread runtime: "
        "parses the same body into the source design's request shape, answers a constant. The "
        "ceiling for HTTP + JSON in Rust here; it has no model.",
        "- **fastapi**: the source design's app re-created in `bench/fastapi/app.py` (uvicorn, "
        "one worker, its metrics, its background logging task, its log lines to a file), "
        "the same models trained by `bench/fastapi/train.py` and loaded with joblib; the same "
        f"body. Python {summary['versions']['python_fastapi']}: "
        f"{summary['versions']['fastapi']}.",
        "- **mlserver**: MLServer with mlserver-sklearn, default settings (one parallel "
        "inference worker process, debug on) but host and ports, the same joblib files as "
        "models `logreg` and `rf`. **Its request shape differs**: Open Inference Protocol, "
        "`POST /v2/models/{logreg,rf}/infer` with one FP64 `[1, 20]` tensor, asking for outputs "
        "`predict` and `predict_proba` (the same work as the source design's app). "
        f"Python {summary['versions']['python_mlserver']}: {summary['versions']['mlserver']}.",
        "- The Python servers run without the machine's `OPENBLAS_CORETYPE`/`OPENBLAS_L2_SIZE` "
        "settings (they slow a current numpy).",
        "- `NICE=-10 bash bench/serving.sh` runs the servers and wrk at niceness -10, ahead of "
        "other work on the machine (the same for every server); its results are kept apart "
        "from the default ones below.",
        "",
    ]
    return "\n".join(lines) + "\n"


def block(summary, args):
    """The results of one invocation: every run, all reported."""
    lines = [
        f"### `{summary['command']}`",
        "",
        f"Date: {summary['date']}. Revision: {summary['revision']}. Niceness of the servers "
        f"and wrk: {args.nice}.",
        "",
    ]
    for res in summary["runs"]:
        lines += [
            f"#### Run {res['run']} of {len(summary['runs'])} (started {res['started']}, load "
            f"average {' '.join(res['loadavg_start'])} at the start, "
            f"{' '.join(res.get('loadavg_end', ['?']))} at the end)",
            "",
        ]
        lines += run_table(res, args)
        lines += ["", "Requests/s ratios, this run:", ""]
        lines += ratio_lines(res, args)
        lines += [""] + memory_ratio(res) + [""]
        lines += ["Targets (design.md §7), this run:", ""]
        for key, (ok, text) in targets(res, args).items():
            lines.append(f"- {'met' if ok else '**missed**'}: {text}")
        lines.append("")
    if summary.get("answers_agree"):
        lines.append("Same answers from Modelship and the source design's app: " + "; ".join(
            f"{a['model']}: label {a['modelship'][0]:.0f} / confidence "
            f"{a['modelship'][1]:.6f} and {a['fastapi'][0]:.0f} / {a['fastapi'][1]:.6f} "
            f"({'agree' if a['same'] else 'DIFFER'})" for a in summary["answers_agree"]) + ".")
        lines.append("")
    lines += [f"Raw wrk output, server logs and summary.json: `bench/results/{summary['out']}/` "
              "(not committed)."]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- serving:begin -->", "<!-- serving:end -->"
RUN_BEGIN = "<!-- serving:results nice={} -->"
RUN_END = "<!-- serving:results-end -->"


def record(path, top, nice, results):
    """Rewrite our section of BENCHMARKS.md (between BEGIN and END) and nothing else: the
    header, then one results block per niceness, this invocation's replacing the last one
    recorded with the same niceness, the others kept."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    blocks = {}
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        old, tail = rest.split(END, 1)
        for m in re.finditer(r"<!-- serving:results nice=(-?\d+) -->\n(.*?)"
                             + re.escape(RUN_END), old, re.S):
            blocks[int(m.group(1))] = m.group(2)
    else:
        head, tail = text.rstrip("\n") + "\n\n", "\n"
    blocks[nice] = results
    body = top + "".join(f"\n{RUN_BEGIN.format(n)}\n{blocks[n]}{RUN_END}\n"
                         for n in sorted(blocks, reverse=True))
    text = head + f"{BEGIN}\n{body}{END}" + tail
    tmp = path.with_name(path.name + ".serving-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------


ARGS = None


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True)
    p.add_argument("--fastapi-venv", required=True)
    p.add_argument("--mlserver-venv", required=True)
    p.add_argument("--joblib-dir", required=True, help="holds model/model_v1.pkl, model_v2.pkl")
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--connections", default="1,8,64")
    p.add_argument("--cold-starts", type=int, default=5)
    p.add_argument("--servers", default=",".join(SERVER_ORDER))
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--lock", default="/tmp/modelship-bench.lock")
    p.add_argument("--command-line", default="bash bench/serving.sh")
    p.add_argument("--revision", default="unknown")
    p.add_argument("--record", default="")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the servers and wrk (negative: ahead of other work)")
    args = p.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.servers = [s for s in args.servers.split(",") if s]
    ARGS = args

    os.sched_setaffinity(0, {args.load_cpu})
    if args.nice:
        os.nice(args.nice)  # inherited by the servers and wrk
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    servers = make_servers(args, work)

    fastapi_py = str(Path(args.fastapi_venv) / "bin" / "python")
    mlserver_py = str(Path(args.mlserver_venv) / "bin" / "python")
    summary = {
        "date": dt.date.today().isoformat(),
        "command": args.command_line,
        "revision": args.revision,
        "machine": machine(),
        "out": out.name,
        "versions": {
            "wrk": wrk_version(),
            "python_fastapi": python_version(fastapi_py),
            "python_mlserver": python_version(mlserver_py),
            "fastapi": pip_versions(fastapi_py, [
                "fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools", "numpy",
                "pandas", "scikit-learn", "joblib", "prometheus-client"]),
            "mlserver": pip_versions(mlserver_py, [
                "mlserver", "mlserver-sklearn", "fastapi", "starlette", "pydantic", "uvicorn",
                "uvloop", "numpy", "scikit-learn", "joblib"]),
        },
        "settings": {"nice": args.nice, "duration_s": args.duration, "warmup_s": args.warmup,
                     "connections": args.connections, "cold_starts": args.cold_starts,
                     "server_cpu": args.server_cpu, "load_cpu": args.load_cpu},
        "runs": [],
    }
    for i in range(1, args.runs + 1):
        summary["runs"].append(one_run(i, servers, args, out))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))

    # Answers of Modelship and the source design's app agree (same models, f32 vs f64).
    agree = []
    first = summary["runs"][0]["servers"]
    if "modelship" in first and "fastapi" in first:
        for model, _ in MODELS:
            a = first["modelship"]["answers"][model]["summary"]
            b = first["fastapi"]["answers"][model]["summary"]
            agree.append({"model": model, "modelship": a, "fastapi": b,
                          "same": a[0] == b[0] and abs(a[1] - b[1]) < 1e-4})
    summary["answers_agree"] = agree
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    top, results = header(summary, args), block(summary, args)
    (out / "results.md").write_text(top + "\n" + results)
    print(top + "\n" + results)
    if args.record:
        record(Path(args.record), top, args.nice, results)
        log(f"recorded in {args.record}")


if __name__ == "__main__":
    main()

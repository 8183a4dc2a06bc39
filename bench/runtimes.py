"""The Docker runtime against the local one, as a client sees them, side by side: two sandboxd
on the same machine, one per runtime, each driven by the same lean keep-alive client (httpx),
calls interleaved so both share the machine's noise.

- ready_pool: POST /v1/sessions until the answer (the pool holds a started sandbox with a
  warm kernel; the pool refills, untimed, between rounds);
- ready_cold: the same with an env of the session's own, which the pool's kernel cannot serve,
  until its first cell has run;
- stateful: print(1) in a session's kernel (measured first, with nothing else running);
- stateless: POST /v1/run of print(1), each from a full run pool (the refill waited for,
  untimed);
- png: a matplotlib figure's PNG back from the kernel;
- idle_mib: memory of an idle session whose kernel has run a first cell, from its cgroup
  (the local runtime's `<session>.<n>`, the container's under `docker/`; v1 or v2).

    python bench/runtimes.py LOCAL_URL DOCKER_URL N
    python bench/runtimes.py local=URL kubernetes=URL N     (any runtimes, by name)

Prints one `name_runtime_p50_ms=… name_runtime_p99_ms=…` line (sandbox-bench reads it).
"""

import glob
import subprocess
import sys
import time

import httpx

PNG = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def timed(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def wait_for_pool(c, pool="session"):
    for _ in range(600):
        if c.get("/readyz").json()["pools"][pool] >= 2:
            return
        time.sleep(0.05)
    raise RuntimeError("the session pool did not refill")


def idle_mib(runtime, session):
    if runtime not in ("docker", "local"):
        return float("nan")  # a pod's cgroup is on its node, not here
    if runtime == "docker":
        label = f"label=org.sandbox-platform.sandbox={session}"
        cid = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", label], capture_output=True, text=True).stdout.strip()
        patterns = [f"/sys/fs/cgroup/memory/**/{cid}/memory.usage_in_bytes", f"/sys/fs/cgroup/**/*{cid}*/memory.current"]
    else:
        patterns = [f"/sys/fs/cgroup/memory/**/{session}.*/memory.usage_in_bytes", f"/sys/fs/cgroup/**/{session}.*/memory.current"]
    for pattern in patterns:
        for path in glob.glob(pattern, recursive=True):
            return int(open(path).read()) / (1 << 20)
    return float("nan")


def main(urls, n):
    clients = {name: httpx.Client(base_url=url, timeout=120) for name, url in urls.items()}
    results = {}

    def add(key, ms):
        results.setdefault(key, []).append(ms)

    sessions = {}
    for name, c in clients.items():
        s = c.post("/v1/sessions", json={}).json()["id"]
        c.post(f"/v1/sessions/{s}/executions", json={"language": "python", "code": "1"}).raise_for_status()
        sessions[name] = s

    rounds = max(5, n // 20)
    for _ in range(rounds):
        for name, c in clients.items():
            wait_for_pool(c)
            created = []
            add(f"ready_pool_{name}", timed(lambda: created.append(c.post("/v1/sessions", json={}).json()["id"])))
            c.delete(f"/v1/sessions/{created[0]}")

            def cold():
                s = c.post("/v1/sessions", json={"env": {"COLD": "1"}}).json()["id"]
                out = c.post(f"/v1/sessions/{s}/executions", json={"language": "python", "code": "print(1)"})
                assert out.json()["stdout"] == "1\n", out.text
                created.append(s)

            add(f"ready_cold_{name}", timed(cold))
            c.delete(f"/v1/sessions/{created[-1]}")

    # Stateful first, with nothing else going on; then one-shot runs, each from a refilled run
    # pool (waited for, untimed), so no pool refill runs beside a measured call.
    for _ in range(n):
        for name, c in clients.items():
            def stateful():
                out = c.post(f"/v1/sessions/{sessions[name]}/executions", json={"language": "python", "code": "print(1)"})
                assert out.json()["stdout"] == "1\n", out.text

            add(f"stateful_{name}", timed(stateful))
    for _ in range(max(20, n // 4)):
        for name, c in clients.items():
            wait_for_pool(c, "run")

            def stateless():
                out = c.post("/v1/run", json={"language": "python", "code": "print(1)"})
                assert out.json()["stdout"] == "1\n", out.text

            add(f"stateless_{name}", timed(stateless))

    for _ in range(max(5, n // 10)):
        for name, c in clients.items():
            def png():
                out = c.post(f"/v1/sessions/{sessions[name]}/executions", json={"language": "python", "code": PNG})
                assert any(o.get("type") == "display_data" for o in out.json()["outputs"]), out.text

            add(f"png_{name}", timed(png))

    time.sleep(2)
    line = [f"idle_mib_{name}={idle_mib(name, sessions[name]):.1f}" for name in clients]
    for key, ms in results.items():
        line.append(f"{key}_p50_ms={q(ms, 0.5):.2f} {key}_p99_ms={q(ms, 0.99):.2f}")
    print(" ".join(line))


if __name__ == "__main__":
    # `NAME=URL` per runtime (`kubernetes=http://...`); a bare URL is, in order, local then docker.
    named = {}
    for i, arg in enumerate(sys.argv[1:-1]):
        name, sep, url = arg.partition("=")
        named[name if sep else ("local", "docker")[i]] = url if sep else arg
    main(named, int(sys.argv[-1]))

#!/usr/bin/env bash
# Soak: four optimization loops (random search over four seeded copies of the bundled
# sentiment task) share one engine in one process for DURATION, bounded by --budget-time.
# Every SAMPLE seconds it reads the calls stored and the process's resident memory; a stretch
# of STALL seconds with no new call while the process lives counts as a deadlock and fails.
#   scripts/soak.sh [DURATION=30m] [SAMPLE=10] [STALL=180]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30m}
sample=${2:-10}
stall=${3:-180}
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$duration" "$sample" "$stall" "$work" <<'PY'
import os, re, sqlite3, subprocess, sys, time

duration, sample, stall, work = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
source = open("tests/examples/sentiment/task.toml").read()
data = os.path.abspath("tests/examples/sentiment/data.jsonl")
tasks = []
for n in range(1, 5):
    text = source.replace('name = "sentiment"', f'name = "sentiment-{n}"', 1)
    text = re.sub(r"^seed = \d+", f"seed = {n}", text, count=1, flags=re.M)
    text = text.replace('path = "data.jsonl"', f'path = "{data}"', 1)
    path = os.path.join(work, f"task{n}.toml")
    open(path, "w").write(text)
    tasks.append(path)
store = os.path.join(work, "soak.sqlite")
env = dict(os.environ, TUNINGFORK_MODELS=os.path.abspath("models"))
command = ["target/release/tuningfork", "--store", store, "optimize", *tasks,
           "--candidates", "100000", "--budget-time", duration]
log = open(os.path.join(work, "soak.log"), "w")
began = time.monotonic()
p = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

def calls():
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*), COALESCE(SUM(cached), 0) FROM calls").fetchone()
    except sqlite3.Error:
        return (0, 0)

def rss_mib():
    try:
        for line in open(f"/proc/{p.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None

samples, last_count, last_change, deadlocked = [], 0, time.monotonic(), False
while p.poll() is None:
    time.sleep(sample)
    now = time.monotonic()
    count, cached = calls()
    rss = rss_mib()
    if rss is not None and count > 0:
        samples.append((now - began, count, rss))
        print(f"{now - began:7.0f} s  {count:>7} calls ({cached} cached)  {rss:7.1f} MiB",
              flush=True)
    if count > last_count:
        last_count, last_change = count, now
    elif now - last_change > stall:
        deadlocked = True
        print(f"no call stored for {stall:.0f} s while the process runs: deadlock", flush=True)
        p.kill()
        break
p.wait()
elapsed = time.monotonic() - began
count, cached = calls()
log.close()
if p.returncode != 0 and not deadlocked:
    print(open(os.path.join(work, "soak.log")).read()[-4000:])
# Memory grows while the engine meets its longest prompts (llama.cpp sizes its buffers on
# demand), then must stay flat: the second half of the soak is compared, middle to end.
first = samples[0] if samples else (0, 0, 0)
middle = next((s for s in samples if s[0] >= elapsed / 2), samples[-1] if samples else first)
end_rss = samples[-1][2] if samples else 0
peak = max((s[2] for s in samples), default=0)
print(f"soak: {elapsed / 60:.1f} min, 4 loops on one engine, {count} calls "
      f"({cached} from the cache), {count / elapsed:.1f} calls/s")
print(f"deadlocks: {1 if deadlocked else 0}; exit status {p.returncode}")
size = sum(os.path.getsize(store + ext) for ext in ("", "-wal") if os.path.exists(store + ext))
print(f"store: {size / 2**20:.1f} MiB, {size / max(count, 1) * 1000 / 2**20:.2f} MiB per 1000 calls")
print(f"resident memory: {first[2]:.1f} MiB at {first[0]:.0f} s, {middle[2]:.1f} MiB at "
      f"{middle[0]:.0f} s, {end_rss:.1f} MiB at the end, peak {peak:.1f} MiB")
flat = end_rss <= middle[2] * 1.05 + 8
print("soak: " + ("ok" if p.returncode == 0 and not deadlocked and flat else "FAILED"))
sys.exit(0 if p.returncode == 0 and not deadlocked and flat else 1)
PY

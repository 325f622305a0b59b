#!/usr/bin/env bash
# Kills an optimization with SIGKILL at seeded random moments, resumes it after each kill, and
# checks that it ends at the artifact an uninterrupted run makes, that no stored call was
# computed again, and that the requests sent to the engine again are no more than those in
# flight (sent, not yet stored) at the kills. The last kill comes once the artifact is stored.
#   scripts/crash-points.sh [KILLS=20] [SEED=1] [-- OPTIMIZE OPTIONS]
# Uses the release binary (built if missing), the bundled sentiment task and models/.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-20}
seed=${2:-1}
shift $(( $# < 2 ? $# : 2 ))
[[ ${1:-} == -- ]] && shift
options=("$@")
if ((${#options[@]} == 0)); then
  options=(--candidates 2 --max-labeled 4 --max-bootstrapped 2)
fi
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$kills" "$seed" "$work" "${options[@]}" <<'PY'
import json, os, random, signal, sqlite3, subprocess, sys, time

kills, seed, work, options = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
binary = os.path.abspath("target/release/tuningfork")
task = os.path.abspath("tests/examples/sentiment/task.toml")
env = dict(os.environ, TUNINGFORK_MODELS=os.path.abspath("models"),
           TUNINGFORK_LOG="warn,calls=debug")

def start(store, args, log):
    return subprocess.Popen([binary, "--store", store, *args], env=env,
                            stdout=subprocess.PIPE, stderr=open(log, "w"))

def query(store, sql):
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as c:
            return c.execute(sql).fetchone()
    except sqlite3.Error:
        return None

COMPUTED = "SELECT COUNT(*) FROM calls WHERE cached = 0 AND error IS NULL"

def computed(store):
    row = query(store, COMPUTED)
    return row[0] if row else 0

def phase(store):
    """What the run was doing, from what it stored last."""
    loop = query(store, "SELECT status FROM optimizations ORDER BY id DESC LIMIT 1")
    if loop and loop[0] == "completed":
        return "writing the outcome"
    first = query(store, "SELECT subject FROM candidate_results ORDER BY id LIMIT 1")
    last = query(store, "SELECT subject, split FROM candidate_results ORDER BY id DESC LIMIT 1")
    if not last:
        return "baseline"
    subject, split = last
    if split == "test":
        return "test"
    if subject.startswith("teacher:"):
        return "teacher"
    return "baseline" if first and subject == first[0] else "candidate scoring"

def log_counts(log):
    text = open(log).read()
    return text.count("computing "), text.count("stored ")

def outcome(out):
    report = json.loads(out)
    return report["status"], [l.get("artifact_hash") for l in report["loops"]]

# The uninterrupted reference.
ref_store = os.path.join(work, "reference.sqlite")
began = time.monotonic()
p = start(ref_store, ["optimize", task, "--json", *options], os.path.join(work, "ref.log"))
out, _ = p.communicate()
assert p.returncode == 0, open(os.path.join(work, "ref.log")).read()
ref_seconds = time.monotonic() - began
ref_status, ref_hashes = outcome(out)
ref_computed = computed(ref_store)
ref_started, _ = log_counts(os.path.join(work, "ref.log"))
print(f"reference: {ref_computed} calls computed in {ref_seconds:.1f} s, artifact {ref_hashes}")

# The same run, killed at seeded moments: a number of stored calls, then a short random delay.
rng = random.Random(seed)
points = sorted(rng.randint(1, ref_computed) for _ in range(kills))
delays = [rng.uniform(0, 0.3) for _ in range(kills)]
store = os.path.join(work, "killed.sqlite")
started_total, in_flight_total, delivered = 0, 0, 0
for i, (point, delay) in enumerate(zip(points, delays)):
    args = ["optimize", task, "--json", *options] if i == 0 else ["resume", "1", "--json"]
    log = os.path.join(work, f"kill{i}.log")
    p = start(store, args, log)
    if i == kills - 1 and kills > 1:
        # The last moment: once the artifact is stored, while the run records its outcome.
        while p.poll() is None and not (query(store, "SELECT COUNT(*) FROM artifacts") or [0])[0]:
            time.sleep(0.002)
    else:
        point = max(point, computed(store) + 1)
        while p.poll() is None and computed(store) < point:
            time.sleep(0.01)
        time.sleep(delay)
    if p.poll() is not None:
        # The run finished before this moment came: nothing left to kill.
        s, c = log_counts(log)
        started_total += s
        print(f"kill {i + 1:>2}: the run had finished")
        break
    where = phase(store)
    p.send_signal(signal.SIGKILL)
    p.wait()
    delivered += 1
    s, c = log_counts(log)
    started_total += s
    in_flight_total += s - c
    print(f"kill {i + 1:>2}: {where:<20} {computed(store):>5} calls stored, {s - c} in flight")

# Resume to the end.
log = os.path.join(work, "final.log")
p = start(store, ["resume", "1", "--json"], log)
out, _ = p.communicate()
assert p.returncode == 0, open(log).read()
s, _ = log_counts(log)
started_total += s
status, hashes = outcome(out)
stored = computed(store)
recomputed = started_total - ref_started
ok = status == "completed" and hashes == ref_hashes and stored == ref_computed \
    and recomputed <= in_flight_total
print(f"crash points survived: {delivered} of {kills}")
print(f"artifact: {hashes} ({'the same as' if hashes == ref_hashes else 'DIFFERENT from'} the reference)")
print(f"calls computed and stored: {stored} (reference {ref_computed})")
print(f"requests sent to the engine again: {recomputed} "
      f"(sent and unfinished when killed: {in_flight_total})")
print("crash points: " + ("ok" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY

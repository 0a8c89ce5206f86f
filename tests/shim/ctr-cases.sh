#!/bin/sh
# The ctr cases of the shim test: every case runs twice, with runc and with
# boxlite (io.containerd.boxlite.v2), against one private containerd, and the
# two transcripts (outputs, exit codes, states, the /tasks/* event sequence
# seen by `ctr events`, normalized for ids, pids and times) must be equal.
#
#   ctr-cases.sh DIR start          containerd up, image imported
#   ctr-cases.sh DIR case NAME      one case under both runtimes, then compare
#   ctr-cases.sh DIR leaks          nothing of ours left (QEMU, virtiofsd, shims, mounts, sockets, state)
#   ctr-cases.sh DIR stop
#   ctr-cases.sh list               the case names
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
: "${BOXLITE_BUILD:=$SRC/build}"
export BOXLITE_BUILD
. "$HERE/lib.sh"
PY=/usr/bin/python3

CASES="exit_codes stdout_stderr missing_command stdin_eof large_output tty file_logger binary_logger detached_exec kill_from_outside oom shim_sigkill containerd_restart"

[ "${1:-}" = list ] && { echo $CASES; exit 0; }
DIR=$1
ACTION=$2
CTRD_DIR=$DIR
[ -f "$DIR/containerd.pid" ] && CTRD_PID=$(cat "$DIR/containerd.pid")

log() { echo "$*" >>"$T"; }
# run LABEL CMD...: records stdout, stderr (unless told to drop it) and rc.
run() {
	label=$1
	shift
	"$@" >"$DIR/o.out" 2>"$DIR/o.err"
	rc=$?
	log "[$label] rc=$rc"
	sed 's/^/  out: /' "$DIR/o.out" >>"$T"
	[ -n "${KEEP_ERR:-}" ] && sed 's/^/  err: /' "$DIR/o.err" >>"$T"
	return 0
}
rtflag() { [ "$RT" = boxlite ] && echo "--runtime io.containerd.boxlite.v2" || echo "--runtime io.containerd.runc.v2"; }
task_status() { c task ls 2>/dev/null | awk -v id="$1" '$1 == id {print $3}'; }
task_pid() { c task ls 2>/dev/null | awk -v id="$1" '$1 == id {print $2}'; }
wait_status() { # ID STATUS [tries]
	i=0
	while [ "$(task_status "$1")" != "$2" ] && [ $i -lt "${3:-300}" ]; do sleep 0.1; i=$((i + 1)); done
	log "status $2: $(task_status "$1")"
}
bundle() { echo "$DIR/state/io.containerd.runtime.v2.task/default/$1"; }
# The shim sockets the leak check looks for (boxlite's).
remember_address() {
	[ "$RT" = boxlite ] || return 0
	cat "$(bundle "$1")/address" 2>/dev/null >>"$DIR/addresses"
	echo >>"$DIR/addresses"
}
# ctr task rm prints "task ID exit with non-zero exit code N" on stderr.
rm_task() {
	c task rm "$1" >"$DIR/o.out" 2>"$DIR/o.err"
	log "[task rm] rc=$? $(grep -o 'exit code [0-9]*' "$DIR/o.err")"
	c container rm "$1" >/dev/null 2>&1
}

# ------------------------------------------------------------------ cases
case_exit_codes() {
	R=$(rtflag)
	for cmd in true false "exit 7" "nosuchcmd" "kill -KILL \$\$" "sleep 0.2; exit 0"; do
		run "sh -c '$cmd'" c run --rm $R "$IMAGE" "$ID" sh -c "$cmd"
	done
}

case_stdout_stderr() {
	R=$(rtflag)
	KEEP_ERR=1 run "out+err" c run --rm $R --env FOO=bar --cwd /tmp "$IMAGE" "$ID" \
		sh -c 'echo out; echo err >&2; echo "FOO=$FOO"; pwd; id; hostname >/dev/null; exit 3'
	run "read-only" c run --rm $R --read-only "$IMAGE" "$ID" sh -c 'touch /x 2>/dev/null && echo writable || echo read-only'
}

case_missing_command() {
	R=$(rtflag)
	run "missing" c run --rm $R "$IMAGE" "$ID" /no/such/binary
	run "missing in PATH" c run --rm $R "$IMAGE" "$ID" nosuchcmd
	log "containers left: $(c container ls -q | grep -c "^$ID\$")"
	c container rm "$ID" >/dev/null 2>&1
}

case_stdin_eof() {
	R=$(rtflag)
	# ctr sends CloseIO when its stdin ends after the task started (an EOF it
	# reads before that is lost, also with runc): feed stdin a little late.
	printf 'one\ntwo\n' >"$DIR/in.txt"
	seq 1 200000 >"$DIR/in.big"
	A="ctr --address $DIR/c.sock run --rm $R $IMAGE $ID"
	run "cat" sh -c "(sleep 1; cat '$DIR/in.txt') | $A sh -c 'cat; echo EOF'"
	run "md5 of 1.2 MB" sh -c "(sleep 1; cat '$DIR/in.big') | $A md5sum"
	run "empty stdin" sh -c "(sleep 1) | $A wc -c"
}

case_large_output() {
	R=$(rtflag)
	c run --rm $R "$IMAGE" "$ID" sh -c 'seq 1 2500000; seq 1 300000 >&2; exit 2' \
		>"$DIR/big.out" 2>"$DIR/big.err"
	log "rc=$? out=$(md5sum <"$DIR/big.out" | cut -c1-32) $(wc -c <"$DIR/big.out") err=$(md5sum <"$DIR/big.err" | cut -c1-32)"
	rm -f "$DIR/big.out" "$DIR/big.err"
}

case_tty() {
	R=$(rtflag)
	script -qec "stty rows 33 cols 101; ctr --address '$DIR/c.sock' run --rm -t $R $IMAGE $ID sh -c 'sleep 0.5; stty size; tty >/dev/null && echo on-a-tty; exit 4'" /dev/null \
		>"$DIR/tty.out" 2>&1
	rc=$?
	log "rc=$rc"
	tr -d '\r\000^@' <"$DIR/tty.out" | sed 's/^/  tty: /' >>"$T"
	# An exec on a TTY in a running task (its own console size).
	c run -d $R "$IMAGE" "$ID" sleep 1000 >/dev/null 2>&1
	wait_status "$ID" RUNNING
	script -qec "stty rows 21 cols 77; ctr --address '$DIR/c.sock' task exec -t --exec-id t1 $ID sh -c 'sleep 0.5; stty size; exit 6'" /dev/null \
		>"$DIR/tty.out" 2>&1
	log "exec -t rc=$?"
	tr -d '\r\000^@' <"$DIR/tty.out" | sed 's/^/  exec tty: /' >>"$T"
	c task kill -s KILL "$ID" >/dev/null 2>&1
	wait_status "$ID" STOPPED
	rm_task "$ID"
}

case_file_logger() {
	R=$(rtflag)
	f="$DIR/file-log.$RT"
	rm -f "$f"
	run "file://" c run --rm $R --log-uri "file://$f" "$IMAGE" "$ID" sh -c 'echo a; echo b >&2; echo c'
	sort "$f" | sed 's/^/  file: /' >>"$T"
}

case_binary_logger() {
	R=$(rtflag)
	lg="$DIR/logger.sh"
	cat >"$lg" <<'EOT'
#!/bin/sh
# binary:// logger: fd 3 stdout, fd 4 stderr, close fd 5 when ready. Args: out PATH
echo "$CONTAINER_NAMESPACE" >"$2.ns"
exec 5>&-
cat <&3 >"$2.out" &
cat <&4 >"$2.err" &
wait
EOT
	chmod 755 "$lg"
	o="$DIR/bin-log.$RT"
	rm -f "$o.out" "$o.err" "$o.ns"
	run "binary://" c run --rm $R --log-uri "binary://$lg?out=$o" "$IMAGE" "$ID" sh -c 'echo to-out; echo to-err >&2; seq 1 10000 | md5sum'
	log "logger out: $(cat "$o.out" 2>/dev/null | tr '\n' ' ')"
	log "logger err: $(cat "$o.err" 2>/dev/null)"
	log "logger ns: $(cat "$o.ns" 2>/dev/null)"
}

case_detached_exec() {
	R=$(rtflag)
	run "run -d" c run -d $R "$IMAGE" "$ID" sleep 1000
	remember_address "$ID"
	wait_status "$ID" RUNNING
	run "exec" c task exec --exec-id e1 "$ID" sh -c 'echo hi; id; pwd'
	run "exec cwd user" c task exec --exec-id e2 --cwd /tmp --user 1000 "$ID" sh -c 'id; pwd; exit 5'
	run "exec stdin" sh -c "echo piped | ctr --address '$DIR/c.sock' task exec --exec-id e3 $ID cat"
	run "exec TERM" c task exec --exec-id e4 "$ID" sh -c 'kill -TERM $$'
	run "exec missing" c task exec --exec-id e5 "$ID" nosuchcmd
	c task ps "$ID" >"$DIR/ps.out" 2>&1
	log "ps: rc=$? processes=$(($(wc -l <"$DIR/ps.out") - 1))"
	c task exec -d --exec-id e6 "$ID" sleep 1000 >/dev/null 2>&1
	sleep 0.5
	c task ps "$ID" >"$DIR/ps.out" 2>&1
	log "ps with exec: processes=$(($(wc -l <"$DIR/ps.out") - 1))"
	run "pause" c task pause "$ID"
	wait_status "$ID" PAUSED 50
	run "resume" c task resume "$ID"
	wait_status "$ID" RUNNING 50
	# cgroup v1 (runc on a v1 host: memory.usage_in_bytes) or v2 (memory.usage) names
	c task metrics "$ID" >"$DIR/metrics.out" 2>&1
	log "metrics: rc=$? memory usage: $(grep -c '^memory\.usage' "$DIR/metrics.out" | sed 's/[1-9][0-9]*/yes/') pids: $(grep '^pids\.current' "$DIR/metrics.out" | awk '{print $2}')"
	run "kill -s KILL" c task kill -s KILL "$ID"
	wait_status "$ID" STOPPED
	run "kill stopped" c task kill -s KILL "$ID"
	rm_task "$ID"
	log "task ls: $(c task ls -q | grep -c "^$ID\$")"
}

case_kill_from_outside() {
	R=$(rtflag)
	run "run -d" c run -d $R "$IMAGE" "$ID" sleep 1000
	remember_address "$ID"
	wait_status "$ID" RUNNING
	pid=$(task_pid "$ID")
	[ -n "$pid" ] && [ "$pid" -gt 1 ] && kill -KILL "$pid"
	wait_status "$ID" STOPPED 600
	rm_task "$ID"
}

case_oom() {
	R=$(rtflag)
	# The memory hog is the container's init: the OOM kill ends the task (137).
	run "oom" c run --rm $R --memory-limit 67108864 "$IMAGE" "$ID" \
		sh -c 'exec awk "BEGIN { s = \"xxxxxxxxxxxxxxxx\"; while (1) s = s s }"'
}

case_shim_sigkill() {
	R=$(rtflag)
	run "run -d" c run -d $R "$IMAGE" "$ID" sleep 1000
	remember_address "$ID"
	addr=$(sed 's|^unix://||' "$(bundle "$ID")/address" 2>/dev/null)
	wait_status "$ID" RUNNING
	spid=$(ps -eo pid,args | grep "containerd-shim-.*-address $DIR/c.sock" | grep -- "-id $ID\( \|\$\)" | awk '{print $1}')
	log "shim found: $([ -n "$spid" ] && echo yes || echo no)"
	[ -n "$spid" ] && kill -KILL "$spid"
	# containerd notices, runs `SHIM delete`, publishes exit and delete.
	i=0
	while ! grep -q "/tasks/delete {\"container_id\":\"$ID\"" "$DIR/events.$RT" && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	log "task listed after the cleanup: $(c task ls -q | grep -c "^$ID\$")"
	run "container rm" c container rm "$ID"
	# runc's shim leaves its socket behind when it is SIGKILLed: not ours to check.
	[ "$RT" = runc ] && [ -n "$addr" ] && rm -f "$addr"
}

case_containerd_restart() {
	R=$(rtflag)
	run "run -d" c run -d $R "$IMAGE" "$ID" sleep 1000
	remember_address "$ID"
	wait_status "$ID" RUNNING
	ctrd_stop
	ctrd_start "$DIR" >/dev/null
	echo "$CTRD_PID" >"$DIR/containerd.pid"
	# The event stream restarts with containerd.
	start_events
	wait_status "$ID" RUNNING
	run "exec after restart" c task exec --exec-id r1 "$ID" sh -c 'echo alive'
	run "kill" c task kill -s KILL "$ID"
	wait_status "$ID" STOPPED
	rm_task "$ID"
}

# ------------------------------------------------------------------ events
start_events() {
	ctr --address "$DIR/c.sock" events >>"$DIR/events.$RT" 2>/dev/null &
	echo $! >"$DIR/events.pid"
	sleep 0.3
}

stop_events() {
	sleep 0.5
	[ -f "$DIR/events.pid" ] && kill "$(cat "$DIR/events.pid")" 2>/dev/null
	rm -f "$DIR/events.pid"
}

# The /tasks/* events of this case's container: topic, ids, exit status, with
# timestamps checked to lie within the case.
normalize_events() {
	$PY - "$DIR/events.$RT" "$ID" "$1" "$2" <<'EOT'
import json, sys, datetime
path, cid, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
def ts(v):
    if not v: return None
    v = v.rstrip("Z")
    main, _, frac = v.partition(".")
    d = datetime.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return d.timestamp() + (float("0." + frac) if frac else 0)
for line in open(path, errors="replace"):
    parts = line.split(" ", 6)
    if len(parts) < 7 or not parts[5].startswith("/tasks/"):
        continue
    topic, body = parts[5], parts[6]
    try:
        ev = json.loads(body)
    except ValueError:
        continue
    if ev.get("container_id") != cid:
        continue
    keep = []
    for k in ("id", "exec_id", "exit_status"):
        if k in ev:
            val = ev[k]
            keep.append("%s=%s" % (k, "ID" if val == cid else val))
    if "pid" in ev and topic in ("/tasks/create", "/tasks/start", "/tasks/exec-started"):
        keep.append("pid>0" if ev["pid"] > 0 else "pid=0")
    at = ts(ev.get("exited_at"))
    if topic in ("/tasks/exit",):
        keep.append("exited_at ok" if at and t0 - 1 <= at <= t1 + 1 else "exited_at BAD %s" % ev.get("exited_at"))
    print("  event %s %s" % (topic, " ".join(keep)))
EOT
}

# ------------------------------------------------------------------ driver
run_case() {
	name=$1
	for RT in runc boxlite; do
		T="$DIR/$name.$RT.txt"
		ID="$name-$RT"
		: >"$T"
		: >"$DIR/events.$RT"
		start_events
		t0=$(date +%s.%N)
		"case_$name"
		t1=$(date +%s.%N)
		stop_events
		normalize_events "$t0" "$t1" >>"$T"
		# ids differ between the two runs; nothing else may
		sed -i "s/$ID/ID/g" "$T"
	done
	if diff -u "$DIR/$name.runc.txt" "$DIR/$name.boxlite.txt" >"$DIR/$name.diff"; then
		sed 's/^/    /' "$DIR/$name.boxlite.txt"
		echo "  $name: boxlite behaves as runc"
		return 0
	fi
	echo "  $name: boxlite differs from runc:"
	cat "$DIR/$name.diff"
	return 1
}

count_ours() { # processes whose command line names the test dir
	n=0
	for p in /proc/[0-9]*; do
		cat "$p/cmdline" 2>/dev/null | tr '\0' ' ' | grep -q -- "$1" && n=$((n + 1))
	done
	echo $n
}

leaks() {
	bad=0
	i=0
	while [ "$(count_ours "$DIR/bl-state")" -gt 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	q=$(count_ours "$DIR/bl-state")
	s=$(count_ours "containerd-shim-boxlite-v2 .*-address $DIR/c.sock")
	r=$(count_ours "containerd-shim-runc-v2 .*-address $DIR/c.sock")
	m=$(grep -c -- "$DIR" /proc/self/mountinfo)
	st=$(ls -A "$DIR/bl-state" 2>/dev/null | wc -l)
	tk=$(ls -A "$DIR"/state/io.containerd.runtime.v2.task/* 2>/dev/null | grep -cv ':$\|^$')
	so=0
	for a in $(sed 's|^unix://||' "$DIR/addresses" 2>/dev/null); do [ -e "$a" ] && so=$((so + 1)); done
	echo "  left: qemu/virtiofsd=$q boxlite-shims=$s runc-shims=$r mounts=$m sandbox-dirs=$st bundles=$tk sockets=$so"
	[ "$q$s$r$m$st$tk$so" = 0000000 ]
}

case "$ACTION" in
start)
	mkdir -p "$DIR"
	: >"$DIR/addresses"
	ctrd_start "$DIR" || exit 1
	echo "$CTRD_PID" >"$DIR/containerd.pid"
	;;
case) run_case "$3" ;;
leaks) leaks ;;
stop) ctrd_stop ;;
*) echo "usage: $0 DIR start|case NAME|leaks|stop" >&2; exit 2 ;;
esac

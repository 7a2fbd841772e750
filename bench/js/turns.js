// Where a latency run's tail comes from, in figures a loaded machine does not distort (for
// bench/workspace-relay.sh TRACE=1): reads `perf script -F tid,cpu,time,event,trace` of
// sched:sched_wakeup, sched:sched_switch and the epoll_wait enter/exit tracepoints on stdin.
//   node turns.js RELAY_TID GEN_TID GEN_THREAD_TIDS(comma list)
// Prints one line: the relay's loop turns (epoll_wait's return to its next call) in CPU time,
// the time it was switched out inside a turn taken off; and, for the relay and the generator's
// main thread, the wait to run (a wakeup or a preemption to being on a CPU), with how many of the
// generator's waits over 1 ms had one of its own other threads on its CPU meanwhile.
const readline = require('readline');

const [relay, gen, genThreads] = process.argv.slice(2);
const own = new Set(genThreads.split(',').filter((t) => t && t !== gen));
const LINE = /^\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$/;

// One thread's waits to run: from its wakeup (or its preemption) to its next switch in.
function waiter(tid) {
  return { tid, running: false, since: null, cpuSeen: null, waits: [], ownBehind: 0 };
}
const waiters = [waiter(relay), waiter(gen)];
const turns = [];
let turn = null; // the relay's turn under way: { start, off, outAt }

function onSwitch(cpu, t, tr) {
  const prev = / prev_pid=(\d+) .*prev_state=(\S+)/.exec(tr), next = / next_pid=(\d+)/.exec(tr)[1];
  for (const w of waiters) {
    if (prev[1] === w.tid) {
      w.running = false;
      w.since = prev[2].startsWith('R') ? t : null;
      w.cpuSeen = w.since === null ? null : new Set();
    }
    if (w.since !== null && w.cpuSeen && own.has(next)) w.cpuSeen.add(cpu);
    if (next === w.tid) {
      if (w.since !== null) {
        const ms = (t - w.since) * 1e3;
        w.waits.push(ms);
        if (ms > 1 && (w.cpuSeen.has(cpu) || own.has(prev[1]))) w.ownBehind++;
      }
      w.running = true;
      w.since = null;
    }
  }
  if (!turn) return;
  if (prev[1] === relay) turn.outAt = t;
  if (next === relay && turn.outAt !== null) turn.off += t - turn.outAt, turn.outAt = null;
}

function onLine(l) {
  const m = LINE.exec(l);
  if (!m) return;
  const [, tid, cpu, ts, ev, tr] = m, t = Number(ts);
  if (ev === 'sched:sched_switch') return onSwitch(cpu, t, tr);
  if (ev === 'sched:sched_wakeup') {
    const pid = /\bpid=(\d+)/.exec(tr)[1];
    for (const w of waiters) if (pid === w.tid && !w.running && w.since === null) w.since = t, w.cpuSeen = new Set();
    return;
  }
  if (tid !== relay) return;
  if (ev.startsWith('syscalls:sys_exit_epoll')) turn = { start: t, off: 0, outAt: null };
  else if (ev.startsWith('syscalls:sys_enter_epoll') && turn) turns.push((t - turn.start - turn.off) * 1e3), turn = null;
}

function quantiles(v) {
  v.sort((a, b) => a - b);
  const q = (p) => (v.length ? v[Math.min(v.length - 1, Math.floor(p * v.length))] : 0).toFixed(3);
  return `p50 ${q(0.5)} p99 ${q(0.99)} p99.9 ${q(0.999)} max ${q(1)} ms`;
}

function over(v, ms) {
  const o = v.filter((x) => x > ms);
  return `${o.length} over ${ms} ms (${o.reduce((a, b) => a + b, 0).toFixed(1)} ms)`;
}

readline.createInterface({ input: process.stdin }).on('line', onLine).on('close', () => {
  const [r, g] = waiters;
  console.log(`relay turns ${turns.length}, CPU ${quantiles(turns)}, ${over(turns, 0.5)}; ` +
    `wait to run: relay ${quantiles(r.waits)}, ${over(r.waits, 1)}; generator ${quantiles(g.waits)}, ` +
    `${over(g.waits, 1)}, ${g.ownBehind} of them behind its own threads`);
});

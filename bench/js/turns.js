// Where a latency run's tail comes from, in figures a loaded machine does not distort (for
// bench/workspace-relay.sh TRACE=1): reads `perf script -F tid,cpu,time,event,trace` of
// sched:sched_wakeup, sched:sched_switch and the epoll_wait enter/exit tracepoints on stdin.
//   node turns.js RELAY_TID GEN_TID GEN_THREAD_TIDS(comma list)
// Prints one line: the relay's loop turns (epoll_wait's return to its next call) in CPU time,
// the time it was switched out inside a turn taken off; and, for the relay and the generator's
// main thread, the wait to run (a wakeup or a preemption to being on a CPU), and what held the CPU
// during the waits over 1 ms: the generator's own other threads, other tasks (the neighbours, and
// for the relay its own watchdog thread; the three that held it longest are named), or no task (the
// CPU idle or in the kernel).
const readline = require('readline');

const [relay, gen, genThreads] = process.argv.slice(2);
const own = new Set(genThreads.split(',').filter((t) => t && t !== gen));
const LINE = /^\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$/;

// One thread's waits to run: from its wakeup (or its preemption) to its next switch in; for the
// waits over 1 ms, the time its CPU spent on each kind of holder meanwhile (ms).
function waiter(tid) {
  return { tid, running: false, since: null, cpu: null, holder: null, last: 0, spent: null, waits: [],
    long: { own: 0, other: 0, idle: 0 }, others: new Map() };
}
const current = new Map(); // cpu -> the tid on it
const comms = new Map(); // tid -> its name, to name the other tasks that held a CPU longest

// Who holds a waiting thread's CPU: one of the generator's own other threads, another task, or no
// task (the CPU idle, or in the kernel, while the wakeup was slow to land).
function kind(tid) {
  if (own.has(tid)) return 'own';
  return tid === '0' || tid === undefined ? 'idle' : 'other';
}

function startWait(w, t, cpu) {
  Object.assign(w, { since: t, cpu, holder: current.get(cpu), last: t, spent: { own: 0, other: 0, idle: 0 }, by: new Map() });
}

function held(w, t, next) { // w's CPU changes hands at t while w waits
  const k = kind(w.holder), name = comms.get(w.holder) || '?';
  w.spent[k] += t - w.last;
  if (k === 'other') w.by.set(name, (w.by.get(name) || 0) + t - w.last);
  w.holder = next, w.last = t;
}

function endWait(w, t) {
  held(w, t, w.tid);
  const ms = (t - w.since) * 1e3;
  w.waits.push(ms);
  if (ms <= 1) return;
  for (const k in w.long) w.long[k] += w.spent[k] * 1e3;
  for (const [name, s] of w.by) w.others.set(name, (w.others.get(name) || 0) + s * 1e3);
}
const waiters = [waiter(relay), waiter(gen)];
const turns = [];
let turn = null; // the relay's turn under way: { start, off, outAt }

function onSwitch(cpu, t, tr) {
  const prev = / prev_pid=(\d+) .*prev_state=(\S+)/.exec(tr), [, comm, next] = / next_comm=(.*) next_pid=(\d+)/.exec(tr);
  current.set(cpu, next), comms.set(next, comm);
  for (const w of waiters) {
    if (prev[1] === w.tid) {
      w.running = false;
      w.since = null;
      if (prev[2].startsWith('R')) startWait(w, t, cpu);
    }
    if (next === w.tid) {
      if (w.since !== null) endWait(w, t);
      w.running = true;
      w.since = null;
    } else if (w.since !== null && w.cpu === cpu) held(w, t, next);
  }
  if (!turn) return;
  if (prev[1] === relay) turn.outAt = t;
  if (next === relay && turn.outAt !== null) turn.off += t - turn.outAt, turn.outAt = null;
}

function onLine(l) {
  const m = LINE.exec(l);
  if (!m) return;
  const [, tid, cpuField, ts, ev, tr] = m, t = Number(ts), cpu = String(Number(cpuField));
  if (ev === 'sched:sched_switch') return onSwitch(cpu, t, tr);
  if (ev === 'sched:sched_wakeup') {
    const [, pid, cpu] = /\bpid=(\d+).* target_cpu=0*(\d+)/.exec(tr);
    for (const w of waiters) if (pid === w.tid && !w.running && w.since === null) startWait(w, t, cpu);
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

const top = (m) => [...m].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([n, ms]) => `${n} ${ms.toFixed(1)}`).join(', ');
const behind = (w) => `their CPU held by own threads ${w.long.own.toFixed(1)}, other tasks ${w.long.other.toFixed(1)} ` +
  `(most: ${top(w.others)}), none ${w.long.idle.toFixed(1)} ms`;

function over(v, ms) {
  const o = v.filter((x) => x > ms);
  return `${o.length} over ${ms} ms (${o.reduce((a, b) => a + b, 0).toFixed(1)} ms)`;
}

readline.createInterface({ input: process.stdin }).on('line', onLine).on('close', () => {
  const [r, g] = waiters;
  console.log(`relay turns ${turns.length}, CPU ${quantiles(turns)}, ${over(turns, 0.5)}; ` +
    `wait to run: relay ${quantiles(r.waits)}, ${over(r.waits, 1)}, ${behind(r)}; ` +
    `generator ${quantiles(g.waits)}, ${over(g.waits, 1)}, ${behind(g)}`);
});
